package main

import (
	"fmt"
	"os"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/cairnproject/cairn/internal/repo"
)

// showProgress draws a progress bar for p on a terminal; on anything else
// (or with --json) it draws nothing. detail returns the text after the bar.
// The returned function stops drawing.
func (a *app) showProgress(title string, p *repo.Progress, detail func(p *repo.Progress) string) (stop func()) {
	f, ok := a.stderr.(*os.File)
	if a.json || !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	container := mpb.New(mpb.WithOutput(f), mpb.WithWidth(32), mpb.WithRefreshRate(200*time.Millisecond))
	bar := container.AddBar(max(p.Total.Load(), 1),
		mpb.PrependDecorators(decor.Name(title+" "), decor.Percentage(decor.WCSyncSpace)),
		mpb.AppendDecorators(
			decor.Any(func(decor.Statistics) string { return detail(p) }),
			decor.Name("  "),
			decor.AverageSpeed(decor.SizeB1024(0), "% .1f"),
			decor.Name("  ETA "),
			decor.AverageETA(decor.ET_STYLE_GO),
		),
	)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			bar.SetTotal(max(p.Total.Load(), 1), false)
			bar.SetCurrent(p.Done.Load())
			select {
			case <-done:
				bar.SetTotal(max(p.Total.Load(), 1), true)
				if !bar.Completed() {
					bar.Abort(false)
				}
				container.Wait()
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

func backupDetail(p *repo.Progress) string {
	return fmt.Sprintf("read %s  new %s  dedup %s  zero %s",
		formatBytes(p.Read.Load()), formatBytes(p.New.Load()), formatBytes(p.Dedup.Load()+p.Unchanged.Load()), formatBytes(p.Zero.Load()))
}

func restoreDetail(p *repo.Progress) string {
	return fmt.Sprintf("fetched %s  skipped %s", formatBytes(p.Fetched.Load()), formatBytes(p.Skipped.Load()))
}

func checkDetail(p *repo.Progress) string {
	return fmt.Sprintf("verified %s", formatBytes(p.Done.Load()))
}
