package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/term"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/repo"
	"github.com/cairnproject/cairn/internal/repo/format"
)

const minKeyFileSize = 16

// readKeyFile reads a key file's secret; with generate, a missing file is
// created with 32 random bytes (hex), mode 0600.
func (a *app) readKeyFile(path string, generate bool) (repo.Secret, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && generate {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return repo.Secret{}, err
		}
		data = []byte(hex.EncodeToString(raw) + "\n")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return repo.Secret{}, fmt.Errorf("creating key file: %w", err)
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return repo.Secret{}, fmt.Errorf("writing key file: %w", err)
		}
		if err := f.Close(); err != nil {
			return repo.Secret{}, fmt.Errorf("writing key file: %w", err)
		}
		if !a.json {
			fmt.Fprintf(a.stderr, "created key file %s: keep a copy somewhere safe, without it the repository cannot be opened\n", path)
		}
	} else if err != nil {
		return repo.Secret{}, fmt.Errorf("reading key file: %w", err)
	}
	if len(data) < minKeyFileSize {
		return repo.Secret{}, fmt.Errorf("key file %s holds %d bytes, at least %d are needed: %w", path, len(data), minKeyFileSize, cairn.ErrInvalid)
	}
	return repo.Secret{Kind: format.KeyKindFile, Bytes: data}, nil
}

func readPasswordFile(path string) (repo.Secret, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return repo.Secret{}, fmt.Errorf("reading password file: %w", err)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) == 0 {
		return repo.Secret{}, fmt.Errorf("password file %s is empty: %w", path, cairn.ErrInvalid)
	}
	return repo.Secret{Kind: format.KeyKindPassword, Bytes: data}, nil
}

func (a *app) env(name, flag string) string {
	if flag != "" {
		return flag
	}
	return a.getenv(name)
}

// secret returns what unlocks the repository: --key-file, --password-file,
// CAIRN_PASSWORD, or a prompt on a terminal. generate creates a missing key
// file (for init).
func (a *app) secret(generate, confirm bool) (repo.Secret, error) {
	if path := a.env("CAIRN_KEY_FILE", a.keyFile); path != "" {
		return a.readKeyFile(path, generate)
	}
	if path := a.env("CAIRN_PASSWORD_FILE", a.passwordFile); path != "" {
		return readPasswordFile(path)
	}
	if pw := a.getenv("CAIRN_PASSWORD"); pw != "" {
		return repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte(pw)}, nil
	}
	return a.prompt("repository password", confirm)
}

// newSecret returns the secret for a new key: --new-key-file (created if
// missing), --new-password-file, CAIRN_NEW_PASSWORD, or a prompt.
func (a *app) newSecret(keyFile, passwordFile string) (repo.Secret, error) {
	if keyFile != "" {
		return a.readKeyFile(keyFile, true)
	}
	if passwordFile != "" {
		return readPasswordFile(passwordFile)
	}
	if pw := a.getenv("CAIRN_NEW_PASSWORD"); pw != "" {
		return repo.Secret{Kind: format.KeyKindPassword, Bytes: []byte(pw)}, nil
	}
	return a.prompt("new password", true)
}

func (a *app) prompt(what string, confirm bool) (repo.Secret, error) {
	fd := int(a.stdin.Fd())
	if !term.IsTerminal(fd) {
		return repo.Secret{}, usageError{fmt.Errorf("no %s given: use --password-file, CAIRN_PASSWORD or --key-file (or run on a terminal)", what)}
	}
	fmt.Fprintf(a.stderr, "enter %s: ", what)
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(a.stderr)
	if err != nil {
		return repo.Secret{}, fmt.Errorf("reading password: %w", err)
	}
	if len(pw) == 0 {
		return repo.Secret{}, fmt.Errorf("empty password: %w", cairn.ErrInvalid)
	}
	if confirm {
		fmt.Fprintf(a.stderr, "enter %s again: ", what)
		again, err := term.ReadPassword(fd)
		fmt.Fprintln(a.stderr)
		if err != nil {
			return repo.Secret{}, fmt.Errorf("reading password: %w", err)
		}
		if !bytes.Equal(pw, again) {
			return repo.Secret{}, fmt.Errorf("the passwords differ: %w", cairn.ErrInvalid)
		}
	}
	return repo.Secret{Kind: format.KeyKindPassword, Bytes: pw}, nil
}
