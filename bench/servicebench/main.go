// Command servicebench drives the service benchmark (bench/service-bench.sh):
//
//	seed:       fill a catalog with a project's volumes and backups
//	concurrent: one backup alone, then N backups of different volumes at
//	            once, through a running service's API; prints throughputs
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/catalog"
	"github.com/cairnproject/cairn/internal/catalog/postgres"
	"github.com/cairnproject/cairn/internal/catalog/sqlite"
	"github.com/cairnproject/cairn/internal/service"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: servicebench seed|concurrent [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "seed":
		err = seed(os.Args[2:])
	case "concurrent":
		err = concurrent(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "servicebench:", err)
		os.Exit(1)
	}
}

func openCatalog(ctx context.Context, dsn string) (catalog.Store, error) {
	if strings.HasPrefix(dsn, "postgres") {
		return postgres.Open(ctx, dsn)
	}
	return sqlite.Open(ctx, dsn)
}

// seed writes volumes and backups rows (as a finished service would have
// them) and a token, and prints the token, a backup ID and a volume ID.
func seed(args []string) error {
	fs := flag.NewFlagSet("seed", flag.ExitOnError)
	dsn := fs.String("catalog", "", "catalog DSN")
	n := fs.Int("backups", 10000, "backups to add")
	project := fs.String("project", "bench", "project")
	_ = fs.Parse(args)
	ctx := context.Background()
	cat, err := openCatalog(ctx, *dsn)
	if err != nil {
		return err
	}
	defer cat.Close()
	if _, err := service.CreateProject(ctx, cat, *project, *project, cairn.Unlimited, time.Now()); err != nil {
		return err
	}
	tok, _, err := service.CreateToken(ctx, cat, cairn.Token{ProjectID: *project, Name: "bench"})
	if err != nil {
		return err
	}
	base := time.Now().UTC().Add(-time.Duration(*n) * time.Minute).Truncate(time.Microsecond)
	var some, vid string
	const batch = 500
	for start := 0; start < *n; start += batch {
		err := cat.Update(ctx, func(tx catalog.Tx) error {
			for i := start; i < min(start+batch, *n); i++ {
				at := base.Add(time.Duration(i) * time.Minute)
				if i%10 == 0 {
					vid = cairn.NewUUID()
					v := cairn.Volume{ID: vid, ProjectID: *project, Name: fmt.Sprintf("vol-%05d", i/10), Size: 10,
						Status: cairn.StatusAvailable, EngineID: cairn.NewID().String(), CreatedAt: at, UpdatedAt: at}
					if err := tx.InsertVolume(ctx, v); err != nil {
						return err
					}
				}
				b := cairn.Backup{ID: cairn.NewUUID(), ProjectID: *project, VolumeID: vid,
					Name: fmt.Sprintf("backup-%05d", i), Container: "volumebackups", Status: cairn.StatusAvailable,
					Size: 10, ObjectCount: 40, StoredBytes: 160 << 20, Incremental: i%10 != 0,
					DataTimestamp: at, RepoID: cairn.NewID().String(), CreatedAt: at, UpdatedAt: at}
				if err := tx.InsertBackup(ctx, b); err != nil {
					return err
				}
				some = b.ID
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	fmt.Printf("%s %s %s\n", tok, some, vid)
	return nil
}

type client struct {
	url, project, token string
}

func (c client) call(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		js, _ := json.Marshal(body)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequest(method, c.url+"/v3/"+c.project+path, rd)
	req.Header.Set("X-Auth-Token", c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// wait polls a resource until it leaves its transient status.
func (c client) wait(kind, id string) (map[string]any, error) {
	for {
		var out map[string]map[string]any
		if err := c.call("GET", "/"+kind+"s/"+id, nil, &out); err != nil {
			return nil, err
		}
		st := out[kind]["status"]
		if st == "available" || st == "in-use" {
			return out[kind], nil
		}
		if st == "error" {
			return nil, fmt.Errorf("%s %s: %v", kind, id, out[kind]["fail_reason"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c client) backup(vol, container string) (time.Duration, error) {
	start := time.Now()
	var b struct{ Backup map[string]any }
	if err := c.call("POST", "/backups", map[string]any{"backup": map[string]any{"volume_id": vol, "container": container}}, &b); err != nil {
		return 0, err
	}
	_, err := c.wait("backup", b.Backup["id"].(string))
	return time.Since(start), err
}

// concurrent makes n volumes from the images, then times one backup
// alone and n at once, each into a fresh container.
func concurrent(args []string) error {
	fs := flag.NewFlagSet("concurrent", flag.ExitOnError)
	var c client
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8776", "API")
	fs.StringVar(&c.token, "token", "", "admin token")
	fs.StringVar(&c.project, "project", "admin", "project")
	images := fs.String("images", "", "comma-separated images, one per volume")
	gib := fs.Int64("gib", 1, "volume size in GiB (each image at most this)")
	rounds := fs.Int("rounds", 3, "rounds")
	_ = fs.Parse(args)
	imgs := strings.Split(*images, ",")
	var vols []string
	var bytesEach int64
	for i, img := range imgs {
		st, err := os.Stat(img)
		if err != nil {
			return err
		}
		bytesEach = st.Size()
		var v struct{ Volume map[string]any }
		if err := c.call("POST", "/volumes", map[string]any{"volume": map[string]any{"size": *gib, "name": fmt.Sprintf("bench-%d", i)}}, &v); err != nil {
			return err
		}
		id := v.Volume["id"].(string)
		if _, err := c.wait("volume", id); err != nil {
			return err
		}
		var att struct{ Attachment struct{ URIs []string } }
		if err := c.call("POST", "/volumes/"+id+"/action", map[string]any{"os-attach": map[string]any{}}, &att); err != nil {
			return err
		}
		if out, err := exec.Command("nbdcopy", img, att.Attachment.URIs[0]).CombinedOutput(); err != nil {
			return fmt.Errorf("nbdcopy: %v: %s", err, out)
		}
		if err := c.call("POST", "/volumes/"+id+"/action", map[string]any{"os-detach": map[string]any{}}, nil); err != nil {
			return err
		}
		vols = append(vols, id)
	}
	for r := range *rounds {
		solo, err := c.backup(vols[0], fmt.Sprintf("solo-%d-%d", r, time.Now().UnixNano()))
		if err != nil {
			return err
		}
		multi := fmt.Sprintf("multi-%d-%d", r, time.Now().UnixNano())
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(vols))
		for i, v := range vols {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = c.backup(v, multi)
			}()
		}
		wg.Wait()
		all := time.Since(start)
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		soloRate := float64(bytesEach) / solo.Seconds() / (1 << 20)
		multiRate := float64(bytesEach) * float64(len(vols)) / all.Seconds() / (1 << 20)
		fmt.Printf("round %d: one alone %.2f s %.0f MiB/s; %d at once %.2f s %.0f MiB/s total; ratio %.2f\n",
			r+1, solo.Seconds(), soloRate, len(vols), all.Seconds(), multiRate, multiRate/soloRate)
	}
	return nil
}
