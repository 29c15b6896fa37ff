// Command cairn protects block volumes and the databases on them. This
// package only wires things together: it parses flags and configuration,
// constructs the implementations and hands them to the internal packages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cairnproject/cairn"
	"github.com/cairnproject/cairn/internal/crypto"
	"github.com/cairnproject/cairn/internal/objstore/metered"
)

// Exit codes, documented in the README.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitCheckFailed = 3
	exitNoRepo      = 10
	exitWrongKey    = 12
)

// app holds what every command shares: flags and output streams.
type app struct {
	stdout, stderr io.Writer
	stdin          *os.File
	getenv         func(string) string
	json           bool

	repo         string
	dataDirFlag  string
	verbose      bool
	passwordFile string
	keyFile      string
	transfers    int
	workers      int
	readers      int
	readAhead    int
	kdf          crypto.KDFParams
	meter        *metered.Backend // the open repository's request counters

	cpuProfile  string
	stopProfile func()

	// hooks are the test hooks of a binary built for the end-to-end
	// tests (testhooks.go); nil otherwise.
	hooks *testHooks
}

// usageError marks errors in how a command was called.
type usageError struct{ error }

// exitError carries a specific exit status with its error.
type exitStatusError struct {
	code int
	err  error
}

func (e *exitStatusError) Error() string { return e.err.Error() }
func (e *exitStatusError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	a := &app{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv}
	hooks, err := newTestHooks(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cairn: %v\n", err)
		os.Exit(exitUsage)
	}
	a.hooks = hooks
	code := a.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if a.stopProfile != nil {
		a.stopProfile()
	}
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	// A status error follows output already printed (a check report):
	// one JSON document per run.
	var es *exitStatusError
	if a.json && !errors.As(err, &es) {
		_ = json.NewEncoder(a.stdout).Encode(map[string]any{"error": err.Error(), "exit_code": code})
	}
	fmt.Fprintf(a.stderr, "cairn: %v\n", err)
	return code
}

// exitCode maps errors to exit statuses in one place.
func exitCode(err error) int {
	var es *exitStatusError
	var ue usageError
	switch {
	case errors.As(err, &es):
		return es.code
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, cairn.ErrWrongKey):
		return exitWrongKey
	case errors.Is(err, cairn.ErrNotRepository):
		return exitNoRepo
	}
	return exitError
}

func (a *app) rootCommand() *cobra.Command {
	info, ok := debug.ReadBuildInfo()
	root := &cobra.Command{
		Use:           "cairn",
		Short:         "Protect block volumes and the databases on them",
		Long:          "cairn backs up block volumes and images into deduplicated, compressed, encrypted repositories.",
		Version:       versionString(version, info, ok),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("cairn {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print machine-readable JSON instead of text")
	root.PersistentFlags().StringVar(&a.cpuProfile, "cpu-profile", "", "write a CPU profile to this file")
	_ = root.PersistentFlags().MarkHidden("cpu-profile")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if a.cpuProfile == "" {
			return nil
		}
		f, err := os.Create(a.cpuProfile)
		if err != nil {
			return err
		}
		a.stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		return pprof.StartCPUProfile(f)
	}
	root.AddCommand(a.repoCommand(), a.volumeCommand(), a.serviceCommand(), a.apiSnapshotCommand(),
		a.apiBackupCommand(), a.policyCommand(), a.limitsCommand(), a.projectCommand(), a.tokenCommand())
	return root
}

// exactArgs is cobra.ExactArgs returning a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.MinimumNArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.MaximumNArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
