// Package stdout is the stdout processor: one CloudEvent JSON per line, so
// the demo pipes into jq. Logs go to stderr.
package stdout

import (
	"bufio"
	"context"
	"io"
	"sync"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// Name is the processor's provider name and its one destination.
const Name = "stdout"

// Processor writes events to a writer.
type Processor struct {
	mu sync.Mutex
	w  *bufio.Writer
}

var (
	_ gateway.Processor = (*Processor)(nil)
	_ gateway.Batcher   = (*Processor)(nil)
)

// New returns a processor writing to w.
func New(w io.Writer) *Processor { return &Processor{w: bufio.NewWriterSize(w, 64<<10)} }

// Start does nothing: stdout needs no discovery.
func (p *Processor) Start(context.Context) error { return nil }

var all = gateway.SubscriptionFunc(func(*gateway.Event) bool { return true })

// Subscription matches every event.
func (p *Processor) Subscription(context.Context) (gateway.Subscription, error) { return all, nil }

// Destinations is always stdout.
func (p *Processor) Destinations(*gateway.Event) []string { return []string{Name} }

// BatchLimits lets the dispatcher hand over bursts, written with one flush.
func (p *Processor) BatchLimits() gateway.BatchLimits { return gateway.BatchLimits{MaxEvents: 256} }

// Deliver writes each event as one line and flushes.
func (p *Processor) Deliver(_ context.Context, _ string, evs []*gateway.Event) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(evs))
	for _, ev := range evs {
		// A bufio.Writer keeps its first write error and returns it
		// from Flush, which is checked below.
		_, _ = p.w.Write(ev.JSON)
		_ = p.w.WriteByte('\n')
	}
	if err := p.w.Flush(); err != nil {
		// A closed stdout (the reader of a pipe went away) will not come
		// back by itself; holding the stream is the safe answer.
		for i := range errs {
			errs[i] = gateway.Unreachable(err)
		}
	}
	return errs
}

// Ready is always nil.
func (p *Processor) Ready() error { return nil }

// Close flushes.
func (p *Processor) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Flush()
}
