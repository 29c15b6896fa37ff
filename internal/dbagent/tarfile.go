package dbagent

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/cairnproject/cairn"
)

// TarName returns the clean relative path of a tar entry's name ("./"
// prefixes and a directory's trailing slash dropped), or an error for a
// name that is absolute, not clean, or leaves the directory.
func TarName(name string) (string, error) {
	n := name
	for strings.HasPrefix(n, "./") {
		n = n[2:]
	}
	n = strings.TrimSuffix(n, "/")
	if n == "" || n == "." {
		return "", nil
	}
	if strings.HasPrefix(n, "/") || path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../") || strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("tar entry %q: not a clean relative path: %w", name, cairn.ErrCorrupt)
	}
	return n, nil
}

// ExtractTar writes the directories and regular files of the tar stream r
// into dir: directories with mode 0700, files 0600. Every entry passes
// allow first, which may refuse it (its error ends the extraction) or
// skip it (ErrSkip). Links, special and sparse files are refused. Writes
// never leave dir, whatever the names or the links already in it.
func ExtractTar(r io.Reader, dir string, allow func(name string, hdr *tar.Header) error) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extracting into %s: %w", dir, err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar stream: %v: %w", err, cairn.ErrCorrupt)
		}
		name, err := TarName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		for k := range hdr.PAXRecords {
			// The reader would expand a sparse file's holes: a small
			// stream could fill the disk.
			if strings.HasPrefix(k, "GNU.sparse.") {
				return fmt.Errorf("tar entry %s: sparse files are not accepted: %w", name, cairn.ErrUnsupported)
			}
		}
		if allow != nil {
			if err := allow(name, hdr); errors.Is(err, ErrSkip) {
				continue
			} else if err != nil {
				return err
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("extracting %s: %w", name, err)
			}
		case tar.TypeReg:
			if d := path.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return fmt.Errorf("extracting %s: %w", name, err)
				}
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return fmt.Errorf("extracting %s: %w", name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("extracting %s: %w", name, err)
			}
		default:
			return fmt.Errorf("tar entry %s: type %q is not a file or directory: %w", name, hdr.Typeflag, cairn.ErrUnsupported)
		}
	}
}

// ErrSkip, returned by ExtractTar's allow, skips an entry.
var ErrSkip = errors.New("skip this entry")
