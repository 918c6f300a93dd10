package pattern

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"quamina.net/go/quamina"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// Pattern is a processor's "pattern" option: an EventBridge event pattern
// evaluated exactly against the whole CloudEvent. It is immutable and safe
// for concurrent use.
type Pattern struct {
	raw      string
	matchAll bool // an alternative without any field: every event matches

	// pool holds copies of one quamina.Quamina, since a Quamina must not be
	// used by two goroutines at once (its flattener keeps per-call state).
	pool sync.Pool
}

// Compile reads raw, an EventBridge event pattern. Unlike the EventBridge
// rule, which AWS evaluates again, nothing checks this pattern after the
// router: a clause quamina cannot evaluate exactly is refused, naming it,
// instead of being widened.
func Compile(raw string) (*Pattern, error) {
	obj, err := ParseObject(raw)
	if err != nil {
		return nil, err
	}
	alts, unsupported := Rewrite(obj, nil)
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("uses %s, which the router's matcher (quamina) cannot evaluate exactly", strings.Join(unsupported, ", "))
	}
	q, err := quamina.New()
	if err != nil {
		return nil, fmt.Errorf("event pattern: %w", err)
	}
	p := &Pattern{raw: raw}
	for _, alt := range alts {
		if len(alt) == 0 {
			p.matchAll = true
			return p, nil
		}
		b, err := json.Marshal(alt)
		if err != nil {
			return nil, fmt.Errorf("event pattern: %w", err)
		}
		if err := q.AddPattern(1, string(b)); err != nil {
			return nil, fmt.Errorf("event pattern refused by the matcher: %w", err)
		}
	}
	p.pool.New = func() any { return q.Copy() }
	return p, nil
}

// String returns the pattern as configured.
func (p *Pattern) String() string { return p.raw }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Match reports whether the JSON document doc (a structured CloudEvent)
// matches. A document quamina cannot read does not match.
func (p *Pattern) Match(doc []byte) bool {
	if p.matchAll {
		return true
	}
	bp := bufPool.Get().(*[]byte)
	buf := AppendJSON((*bp)[:0], doc)
	q := p.pool.Get().(*quamina.Quamina)
	xs, err := q.MatchesForEvent(buf)
	p.pool.Put(q)
	*bp = buf
	bufPool.Put(bp)
	return err == nil && len(xs) > 0
}

// Decorate returns proc taking only the events p matches, on top of its own
// routing: its Subscription (the built-in routing filter) and its
// Destinations (the dispatcher) both require p, so an event reaches the
// processor only if both agree. A nil p returns proc itself.
func Decorate(proc gateway.Processor, p *Pattern) gateway.Processor {
	if p == nil {
		return proc
	}
	d := &decorated{Processor: proc, p: p}
	if b, ok := proc.(gateway.Batcher); ok {
		// The dispatcher batches for processors that say so: keep saying it.
		return &batching{decorated: d, b: b}
	}
	return d
}

type decorated struct {
	gateway.Processor
	p *Pattern
	// last is the pattern's verdict on the last event the routing filter
	// asked about. The dispatcher's Destinations asks about that same
	// event right after, and the pattern need not run twice; any other
	// event (another stream's, a catch-up's, a replay's) is matched again.
	// Holding the event keeps its address from being reused.
	last atomic.Pointer[verdict]
}

type verdict struct {
	ev *gateway.Event
	ok bool
}

// match evaluates the pattern on ev, or takes the verdict the routing
// filter just reached on it.
func (d *decorated) match(ev *gateway.Event) bool {
	if v := d.last.Load(); v != nil && v.ev == ev {
		return v.ok
	}
	return d.p.Match(ev.JSON)
}

type batching struct {
	*decorated
	b gateway.Batcher
}

var (
	_ gateway.Processor = (*decorated)(nil)
	_ gateway.Batcher   = (*batching)(nil)
)

func (b *batching) BatchLimits() gateway.BatchLimits { return b.b.BatchLimits() }

// Subscription returns the processor's subscription narrowed by the pattern.
func (d *decorated) Subscription(ctx context.Context) (gateway.Subscription, error) {
	sub, err := d.Processor.Subscription(ctx)
	if err != nil {
		return nil, err
	}
	return both{sub: sub, d: d}, nil
}

// Destinations returns none for an event the pattern does not match.
func (d *decorated) Destinations(ev *gateway.Event) []string {
	if !d.match(ev) {
		return nil
	}
	return d.Processor.Destinations(ev)
}

type both struct {
	sub gateway.Subscription
	d   *decorated
}

// Match asks the processor first: a topic lookup is cheaper than the
// pattern. The pattern's verdict is kept for Destinations.
func (b both) Match(ev *gateway.Event) bool {
	if !b.sub.Match(ev) {
		return false
	}
	ok := b.d.p.Match(ev.JSON)
	b.d.last.Store(&verdict{ev: ev, ok: ok})
	return ok
}
