package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/wasm"
)

// Exit codes of the filter verb.
const (
	filterExitOK       = 0 // every event got a verdict other than error
	filterExitRefused  = 1 // the module would be refused at start-up, or the input is unreadable
	filterExitUsage    = 2
	filterExitEventErr = 3 // at least one event ended in an error (or was not a CloudEvent)
)

// filterCommand implements
//
//	vmware-event-router filter -wasm FILE [-filter-config STRING] [EVENTS.jsonl]
//
// It loads one module exactly as the daemon would (same validation, same
// sandbox, same limits), runs it over CloudEvents, one JSON object a line,
// from the file or stdin, and prints a line per event:
//
//	pass<TAB>EVENT       the event, unchanged
//	replace<TAB>EVENT    the replacement
//	drop
//	error<TAB>line N: KIND: REASON
//
// so that a user can try a filter before deploying it.
func filterCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vmware-event-router filter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	module := fs.String("wasm", "", "the filter module to run (.wasm or .wasm.gz)")
	cfgOpt := fs.String("filter-config", "", "the filter's config option, handed to the module")
	timeout := fs.Duration("timeout", 100*time.Millisecond, "the filter's timeout option, per event")
	memLimit := fs.String("memory-limit", "16MiB", "the filter's memory_limit option")
	verbose := fs.Bool("verbose", false, "show the module's log and output (debug level) on stderr")
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage: vmware-event-router filter -wasm FILE [-filter-config STRING] [EVENTS.jsonl]\n\n"+
			"Runs one filter module over CloudEvents (one JSON object a line; stdin without a file)\n"+
			"and prints, per event: \"pass<TAB>EVENT\", \"replace<TAB>EVENT\", \"drop\" or \"error<TAB>REASON\".\n"+
			"Exit status: 0 ok, 1 module refused (the daemon would not start with it), 2 usage,\n"+
			"3 some event ended in an error.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return filterExitOK
		}
		return filterExitUsage
	}
	if *module == "" || fs.NArg() > 1 || *timeout <= 0 {
		fs.Usage()
		return filterExitUsage
	}
	limit, err := config.ParseSize(*memLimit)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "filter: -memory-limit: %v\n", err)
		return filterExitUsage
	}
	in := stdin
	if fs.NArg() == 1 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "filter: %v\n", err)
			return filterExitRefused
		}
		defer func() { _ = f.Close() }()
		in = f
	}

	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	host, err := wasm.NewHost(wasm.HostOptions{Log: log})
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "filter: %v\n", err)
		return filterExitRefused
	}
	defer func() { _ = host.Close() }()
	ctx := context.Background()
	f, err := host.Load(ctx, *module, config.WasmFilter{
		Address: *module, Timeout: *timeout, Config: *cfgOpt, MemoryLimit: limit, PoolSize: 1,
		// dead_letter keeps the reason of an error in the verdict.
		OnError: config.OnErrorDeadLetter,
	})
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "filter: module refused: %v\n", err)
		return filterExitRefused
	}
	defer func() { _ = f.Close() }()

	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), gateway.MaxEventSize+1)
	out := bufio.NewWriter(stdout)
	code := filterExitOK
	line := 0
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if len(text) == 0 {
			continue
		}
		ev, err := gateway.ParseReplacement(text, &gateway.Event{})
		if err != nil {
			_, _ = fmt.Fprintf(out, "error\tline %d: input is not a CloudEvent: %v\n", line, err)
			code = filterExitEventErr
			continue
		}
		r := f.Filter(ctx, ev)
		switch r.Verdict {
		case filters.Pass:
			_, _ = fmt.Fprintf(out, "pass\t%s\n", ev.JSON)
		case filters.Drop:
			_, _ = fmt.Fprintln(out, "drop")
		case filters.Replace:
			_, _ = fmt.Fprintf(out, "replace\t%s\n", r.Event.JSON)
		default:
			_, _ = fmt.Fprintf(out, "error\tline %d: %v\n", line, r.Err)
			code = filterExitEventErr
		}
	}
	if err := sc.Err(); err != nil {
		// The verdicts so far are still worth showing; the read error
		// below is the one to report.
		_ = out.Flush()
		_, _ = fmt.Fprintf(stderr, "filter: reading events: line %d: %v\n", line+1, err)
		return filterExitRefused
	}
	// out keeps the first write error of the loop and returns it here, so a
	// verdict lost on a broken stdout is not reported as success.
	if err := out.Flush(); err != nil {
		_, _ = fmt.Fprintf(stderr, "filter: writing verdicts: %v\n", err)
		return filterExitRefused
	}
	return code
}
