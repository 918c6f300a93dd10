package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/deadletter"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// replayTimeout bounds how long replay waits for deliveries after the last
// letter was queued: enough for the default 20 attempts (about 5 minutes).
const replayTimeout = 10 * time.Minute

// replayCommand is `vmware-event-router replay -config FILE DEADLETTER.jsonl`:
// it sends processor dead letters straight back to the destination that gave
// up on them, and filter dead letters through the filter chain again (the
// filter may have been fixed). What fails again is dead-lettered again.
func replayCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", config.DefaultPath, "path to the router's configuration file")
	verbose := fs.Bool("verbose", false, "print event handling information")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(stderr, "usage: vmware-event-router replay -config FILE DEADLETTER.jsonl")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	log := newLogger(stderr, *verbose)
	cfg, err := config.Load(*configPath)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router replay: invalid configuration:\n%v\n", err)
		return 1
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router replay: %v\n", err)
		return 1
	}
	letters, torn, err := deadletter.Read(f, fs.Arg(0))
	_ = f.Close()
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router replay: %v\n", err)
		return 1
	}
	for _, n := range torn {
		log.Warn("skipping a torn dead-letter line (the router stopped while writing it)", "file", fs.Arg(0), "line", n)
	}
	letters, undecodable := splitStream(letters)
	for _, l := range undecodable {
		_, _ = fmt.Fprintf(stderr, "%s:%d: skipped: origin stream (key %d, created %s): vCenter sent XML the router could not decode (%s); it cannot be replayed, the XML is under \"raw\"\n",
			fs.Arg(0), l.LineNo, l.Key, l.CreatedTime.Format(time.RFC3339Nano), l.Error)
	}
	if len(undecodable) > 0 {
		_, _ = fmt.Fprintf(stderr, "skipped %d dead letters of origin stream: undecodable events are listed, never replayed\n", len(undecodable))
	}

	var delivered, failed, dropped atomic.Int64
	finished := func(_ *gateway.Event, _ string, result string) {
		if result == "ok" {
			delivered.Add(1)
		} else {
			failed.Add(1)
		}
	}
	p, err := newPipeline(ctx, cfg, metrics.New(), stdout, log, finished)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router replay: %v\n", err)
		return 1
	}
	defer p.closeAll()
	procCtx, stopProc := context.WithCancel(ctx)
	defer stopProc()
	for _, pr := range p.procs {
		if err := pr.processor.Start(procCtx); err != nil {
			_, _ = fmt.Fprintf(stderr, "vmware-event-router replay: processor %s: %v\n", pr.cfg.Name, err)
			return 1
		}
	}
	for _, l := range letters {
		ev, err := l.PipelineEvent()
		if err != nil {
			log.Error("skipping a dead letter whose event is not a valid CloudEvent", "file", fs.Arg(0), "line", l.LineNo, "err", err)
			failed.Add(1)
			continue
		}
		if l.Origin == gateway.OriginProcessor {
			// A processor's letter goes back to that processor only.
			pr := p.proc(l.Processor)
			switch {
			case pr == nil:
				log.Error("skipping a dead letter of a processor the config does not have", "file", fs.Arg(0), "line", l.LineNo, "processor", l.Processor)
				failed.Add(1)
			case l.Destination != "":
				err = pr.disp.SubmitTo(ctx, ev, []string{l.Destination})
			default:
				err = pr.disp.Submit(ctx, ev)
			}
		} else {
			var out *gateway.Event
			out, err = p.chain.Run(ctx, ev)
			switch {
			case err != nil:
				// An error here means ctx ended before the sink kept the
				// letter: interrupted, as below.
				err = p.procs[0].disp.DeadLetter(ctx, gateway.DeadLetter{Event: ev, Origin: gateway.OriginFilter,
					Reason: "filter_error", Error: err.Error(), Attempts: 1})
				failed.Add(1)
			case out == nil:
				dropped.Add(1)
			default:
				// A filter's letter goes to every processor taking its
				// stream, as the router would have sent it.
				for _, pr := range p.procs {
					if err == nil && pr.route().Takes(out.Stream) {
						err = pr.disp.Submit(ctx, out)
					}
				}
			}
		}
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "vmware-event-router replay: interrupted: %v\n", err)
			return 1
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	var closeErr error
	for _, pr := range p.procs {
		closeErr = errors.Join(closeErr, pr.disp.Close(waitCtx))
	}
	_, _ = fmt.Fprintf(stderr, "replayed %d dead letters: %d delivered, %d dead-lettered again, %d dropped by filters\n",
		len(letters), delivered.Load(), failed.Load(), dropped.Load())
	if closeErr != nil || failed.Load() > 0 {
		return 1
	}
	return 0
}

// splitStream separates the letters of origin stream (undecodable events:
// nothing to send) from those replay sends.
func splitStream(all []deadletter.Line) (replayable, stream []deadletter.Line) {
	for _, l := range all {
		if l.Origin == gateway.OriginStream {
			stream = append(stream, l)
		} else {
			replayable = append(replayable, l)
		}
	}
	return replayable, stream
}

// proc returns the processor named name; nil if the config has none. A
// config of one processor takes every processor letter: a letter written
// before the processor was renamed still has a way back.
func (p *pipeline) proc(name string) *proc {
	for _, pr := range p.procs {
		if pr.cfg.Name == name {
			return pr
		}
	}
	if len(p.procs) == 1 {
		return p.procs[0]
	}
	return nil
}
