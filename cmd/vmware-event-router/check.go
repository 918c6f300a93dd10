package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// checkCommand is `vmware-event-router check -config FILE [-offline]`: it
// validates a configuration file exactly as the daemon does at start, and
// with -offline without looking for the files and directories it names, so
// a file meant for a pod can be checked before it goes into a Secret.
// Filter modules are checked with the filter command.
func checkCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", config.DefaultPath, "path to the configuration file")
	offline := fs.Bool("offline", false, "do not check that the files and directories the configuration names exist here")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(stderr, "usage: vmware-event-router check -config FILE [-offline]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if err := fromEnvironment(fs, configPath, nil); err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router check: %v\n", err)
		return 2
	}
	data, err := os.ReadFile(*configPath)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router check: %v\n", err)
		return 1
	}
	parse := config.Parse
	if *offline {
		parse = config.ParseOffline
	}
	cfg, err := parse(*configPath, data)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	state := "no state directory (no checkpoints; dead letters to the log)"
	if cfg.State != nil {
		state = "state directory " + cfg.State.Dir
	}
	// Names default to the provider names, so the spec's configs print as
	// they always did.
	var streams, procs []string
	for _, sc := range cfg.Streams {
		streams = append(streams, "stream "+sc.Name)
	}
	for _, pc := range cfg.Processors {
		p := "processor " + pc.Name
		if len(pc.Streams) > 0 {
			p += " (streams " + strings.Join(pc.Streams, ", ") + ")"
		}
		if pc.Pattern != nil {
			p += " (with a pattern)"
		}
		procs = append(procs, p)
	}
	_, _ = fmt.Fprintf(stdout, "%s: ok: %s, %s, %d filter entries, metrics on %s, %s\n",
		*configPath, strings.Join(streams, ", "), strings.Join(procs, ", "), len(cfg.Filters), cfg.Metrics.Address, state)
	return 0
}
