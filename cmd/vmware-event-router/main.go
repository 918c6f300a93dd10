// Command vmware-event-router reads vCenter events, runs them through
// WebAssembly filters and delivers them as CloudEvents to OpenFaaS, AWS
// EventBridge or stdout.
//
// This package parses flags, builds the parts in dependency order and
// handles signals; everything else lives in gateway/, filters/ and wasm/.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/viper"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

//go:embed banner.txt
var banner string

// version and commit are set by the Makefile with -ldflags "-X main.version=... -X main.commit=...".
var (
	version string
	commit  string
)

// shutdownLimit is how long the router may take to exit after SIGTERM:
// 10 s for in-flight deliveries, then the checkpoint and logouts.
const shutdownLimit = 15 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
		time.Sleep(shutdownLimit)
		fmt.Fprintln(os.Stderr, "vmware-event-router: shutdown took longer than", shutdownLimit, "- exiting")
		os.Exit(1)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// versionInfo returns the version and commit, from -ldflags or else from
// the module build info.
func versionInfo() (v, c string) {
	v, c = version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}

// run is the whole program: the daemon, or one of the verbs. It returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			v, c := versionInfo()
			_, _ = fmt.Fprintf(stdout, "commit: %s\nversion: %s\n", c, v)
			return 0
		case "filter":
			return filterCommand(args[1:], os.Stdin, stdout, stderr)
		case "replay":
			return replayCommand(ctx, args[1:], stdout, stderr)
		case "check":
			return checkCommand(args[1:], stdout, stderr)
		case "top":
			return topCommand(ctx, args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("vmware-event-router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", config.DefaultPath, "path to configuration file for metrics, stream source and processor (environment: "+envPrefix+"_CONFIG); a .yaml or .yml file holds YAML")
	verbose := fs.Bool("verbose", false, "print event handling information (environment: "+envPrefix+"_VERBOSE)")
	fs.Usage = func() {
		v, c := versionInfo()
		_, _ = fmt.Fprintf(stderr, "%s\n\nUsage of %s:\n\n", banner, "vmware-event-router")
		fs.PrintDefaults()
		_, _ = fmt.Fprintf(stderr, "\nVerbs:\n  version                                  print commit and version\n"+
			"  filter -wasm FILE [-filter-config S] [EVENTS.jsonl]  run one filter module over events\n"+
			"  replay -config FILE DEADLETTER.jsonl     send dead letters back to the processor\n"+
			"  check -config FILE [-offline]            validate a configuration file and exit\n"+
			"  top -metrics URL [-interval 1s] [-user U]  live rates, lag and queues per stream and processor\n")
		_, _ = fmt.Fprintf(stderr, "\ncommit: %s\nversion: %s\n", c, v)
	}
	if code, ok := parseArgs(fs, args, stderr, "vmware-event-router"); !ok {
		return code
	}
	if err := fromEnvironment(fs, configPath, verbose); err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router: %v\n", err)
		return 2
	}
	log := newLogger(stderr, *verbose)
	setMemoryLimit(log, cgroupRoot)

	cfg, err := config.Load(*configPath)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router: invalid configuration, not starting:\n%v\n", err)
		return 1
	}
	d, err := newDaemon(ctx, cfg, stdout, log)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router: not starting: %v\n", err)
		return 1
	}
	if err := d.run(ctx); err != nil {
		log.Error("router stopped", "err", err)
		return 1
	}
	return 0
}

// envPrefix names the environment variables bound to the flags:
// VMWARE_EVENT_ROUTER_CONFIG, VMWARE_EVENT_ROUTER_VERBOSE.
const envPrefix = "VMWARE_EVENT_ROUTER"

// fromEnvironment sets the -config and -verbose values through viper: a
// flag given on the command line wins, then its environment variable
// (for a container, where the command line is the image's), then the
// flag's default. verbose may be nil for verbs without it.
func fromEnvironment(fs *flag.FlagSet, configPath *string, verbose *bool) error {
	v := viper.New()
	v.SetEnvPrefix(envPrefix)
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, name := range []string{"config", "verbose"} {
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if err := v.BindEnv(name); err != nil {
			return err
		}
		if err := v.BindFlagValue(name, stdFlag{f, given[name]}); err != nil {
			return err
		}
	}
	*configPath = v.GetString("config")
	if verbose != nil {
		b, err := strconv.ParseBool(v.GetString("verbose"))
		if err != nil {
			return fmt.Errorf("%s_VERBOSE: must be \"true\" or \"false\", got %q", envPrefix, v.GetString("verbose"))
		}
		*verbose = b
	}
	return nil
}

// stdFlag is a flag package flag as viper sees flags.
type stdFlag struct {
	f     *flag.Flag
	given bool // on the command line
}

func (s stdFlag) HasChanged() bool    { return s.given }
func (s stdFlag) Name() string        { return s.f.Name }
func (s stdFlag) ValueString() string { return s.f.Value.String() }
func (s stdFlag) ValueType() string   { return "string" }

// newLogger returns the structured text logger on w; verbose is debug level
// (-verbose: one line per event handled and per delivery).
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// cgroupRoot is where the container's cgroup file system is mounted.
const cgroupRoot = "/sys/fs/cgroup"

// setMemoryLimit sets the Go runtime's soft memory limit to 90% of the
// container's memory limit, unless GOMEMLIMIT is set: the garbage collector
// then works harder near the limit instead of letting garbage (a
// discarded filter instance's memory, a burst's buffers) push the process
// over it and into the OOM killer. Without a cgroup limit nothing changes.
func setMemoryLimit(log *slog.Logger, root string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, ok := cgroupMemoryLimit(root)
	if !ok {
		return
	}
	goLimit := limit / 10 * 9
	debug.SetMemoryLimit(goLimit)
	log.Debug("go memory limit set from the cgroup", slog.Int64("limit_bytes", goLimit), slog.Int64("cgroup_limit_bytes", limit))
}

// cgroupMemoryLimit reads the memory limit of the cgroup mounted at root:
// v2's memory.max, else v1's memory.limit_in_bytes (in root or in its
// memory/ controller directory). ok is false when there is none ("max", or
// v1's page-rounded MaxInt64) or it cannot be read.
func cgroupMemoryLimit(root string) (limit int64, ok bool) {
	for _, name := range []string{"memory.max", "memory.limit_in_bytes", filepath.Join("memory", "memory.limit_in_bytes")} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		// v1 reports "no limit" as MaxInt64 rounded down to a page.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// parseArgs parses a verb's flags, which take no positional arguments. When
// ok is false the verb exits with code: 0 for -h, 2 for a usage error.
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer, name string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "%s: unexpected argument %q (see -h)\n", name, fs.Arg(0))
		return 2, false
	}
	return 0, true
}
