package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// DispatcherOptions configures a Dispatcher. Zero values take the defaults
// of CONFIG.md.
type DispatcherOptions struct {
	Processor     Processor
	ProcessorName string // provider name: metric label and /stats key
	StatsName     string // the processor's address in /stats (the rule ARN for EventBridge)
	Concurrency   int    // deliveries in flight over all destinations (64)
	QueueSize     int    // events waiting per destination (10000)
	RetryLimit    int    // attempts before dead-lettering; 0 never gives up
	BackoffMin    time.Duration
	BackoffMax    time.Duration
	Sink          DeadLetterSink
	Log           *slog.Logger
	Metrics       *metrics.Metrics
	// Stream names the default stream: the one of events whose
	// Event.Stream is "" ("stream" when empty). Each stream has its own
	// watermark ledger, labelled and named in /readyz by its name.
	Stream string
	// MaxPending caps the events of one stream read but not acknowledged
	// (its watermark ledger): Submit, Done and DoneAt wait while it is
	// reached.
	// DefaultMaxPending, or twice QueueSize when that is more.
	MaxPending int
	// DegradedAfter is how long the oldest unacknowledged event may wait
	// before Degraded reports the stream held (DefaultDegradedAfter).
	DegradedAfter time.Duration
	// IdleTimeout is how long a destination stays with nothing queued or
	// in flight before its goroutine, queue and metric series are released
	// (DefaultIdleTimeout); the next event for it creates it again.
	IdleTimeout time.Duration
	// Gauges, when set, is shared by the dispatchers of the processors
	// taking a stream, so that the stream's pending and lag gauges show the
	// processor furthest behind; without it the dispatcher sets them alone.
	Gauges *StreamGauges
	// Finished, when set, is called once per event and destination when
	// the dispatcher is done with it: result "ok" or "dead_letter".
	Finished func(ev *Event, dest, result string)
}

// Defaults for DispatcherOptions. With these, 20 attempts span about five
// minutes: 0.25+0.5+...+16 s, then 20 s each.
const (
	DefaultConcurrency = 64
	DefaultQueueSize   = 10000
	DefaultBackoffMin  = 250 * time.Millisecond
	DefaultBackoffMax  = 20 * time.Second
	// HoldMax caps the wait between probes of an unreachable destination:
	// a probe is cheap (a refused dial), and a short cap means delivery
	// resumes within seconds of the destination coming back.
	HoldMax = 3 * time.Second
	// DefaultMaxPending bounds the watermark ledger at about 4 MB (40 bytes
	// an entry). Ten times the default queue_size, so that a held
	// destination's full queue holds the stream first, as before; the cap
	// bites when most events are dropped by filters or go to other
	// destinations while one event is held, which used to grow the ledger
	// without bound.
	DefaultMaxPending = 100_000
	// DefaultDegradedAfter is CONFIG.md's degraded_after: a stream whose
	// oldest unacknowledged event waits longer shows on /readyz.
	DefaultDegradedAfter = 5 * time.Minute
	// DefaultIdleTimeout is how long an empty destination lives on: long
	// enough that a function called every few minutes keeps its goroutine
	// and series, short enough that deleted functions do not pile up.
	DefaultIdleTimeout = 10 * time.Minute
)

// Dispatcher delivers events for one processor. Each destination has a
// bounded queue; events about the same vSphere object (Event.Entity) reach a
// destination one at a time and in order, while different objects go in
// parallel up to Concurrency. A failed delivery is retried with capped
// backoff and jitter, up to RetryLimit attempts, then dead-lettered; a
// destination that fails as a whole (Unreachable) is held (no attempt
// counted) and its full queue holds the stream: backpressure, never loss.
//
// While there are several destinations, one may use at most half of the
// Concurrency slots, so that a function whose calls hang until their
// timeout leaves the other half to the healthy ones; a destination alone
// uses them all.
type Dispatcher struct {
	o     DispatcherOptions
	batch BatchLimits
	sem   chan struct{} // deliveries in flight
	// ledgers holds one watermark ledger per stream, copied on write: the
	// hot path reads it without a lock.
	ledgers  atomic.Pointer[map[string]*ledger]
	ledgerMu sync.Mutex // serializes adding a ledger
	def      *ledger    // the default stream's, without a map lookup
	stat     *metrics.Stat
	ctx      context.Context // cancelled when Close gives up waiting
	cancel   context.CancelFunc
	ndests   atomic.Int32 // len(dests), for the loops to read without mu

	mu     sync.Mutex
	dests  map[string]*destination
	closed bool
	wg     sync.WaitGroup // destination loops and deliveries
}

// item is one event on its way to one destination.
type item struct {
	ev       *Event
	key      string // ordering key: the entity, or unique when it has none
	led      *ledger
	seq      uint64 // in led
	attempts int    // counted failures; written under the destination's mu
	err      error  // the last counted failure, for /readyz; under mu
}

// destination is one queue: an OpenFaaS function, the EventBridge bus.
type destination struct {
	d     *Dispatcher
	name  string
	space chan struct{} // one token per queued event: the queue bound
	nudge chan struct{} // wakes the loop
	users atomic.Int32  // Submits using it: it must not be reaped
	depth prometheus.Gauge
	held  prometheus.Gauge      // eventrouter_destination_held
	res   [4]prometheus.Counter // ok, retry, failed, dead_letter

	mu         sync.Mutex
	entities   map[string][]*item // per-entity FIFO; the head is in flight or waiting
	ready      []string           // entities whose head may be sent now
	queued     int
	inflight   int       // delivery calls in flight
	lastBusy   time.Time // when the last call ended: idle since then if nothing is queued
	stopped    bool      // the loop has ended: no call may start
	probe      time.Time // held: no delivery before this
	outage     int       // consecutive calls that failed as a whole; > 0 is held
	epoch      uint64    // outages so far: the current one's number
	heldSince  time.Time
	heldReason string // the last whole-destination error, on one line
}

const (
	resOK = iota
	resRetry
	resFailed
	resDeadLetter
)

// NewDispatcher returns a dispatcher for o.Processor.
func NewDispatcher(o DispatcherOptions) *Dispatcher {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.Sink == nil {
		o.Sink = NewLogSink(o.Log)
	}
	if o.Stream == "" {
		o.Stream = "stream"
	}
	if o.MaxPending <= 0 {
		o.MaxPending = max(DefaultMaxPending, 2*o.QueueSize)
	}
	if o.DegradedAfter <= 0 {
		o.DegradedAfter = DefaultDegradedAfter
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	d := &Dispatcher{o: o, sem: make(chan struct{}, o.Concurrency), dests: map[string]*destination{}}
	d.ledgers.Store(&map[string]*ledger{})
	// The default stream's ledger and gauges exist from the start, as
	// before.
	d.def = d.ledgerFor(o.Stream)
	d.batch = BatchLimits{MaxEvents: 1}
	if b, ok := o.Processor.(Batcher); ok {
		d.batch = b.BatchLimits()
		if d.batch.MaxEvents < 1 {
			d.batch.MaxEvents = 1
		}
	}
	d.stat = o.Metrics.Stats.Register(o.ProcessorName, "processor", o.StatsName)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// ledgerFor returns the watermark ledger of the named stream ("" is the
// default stream), creating it on first use.
func (d *Dispatcher) ledgerFor(stream string) *ledger {
	// Small enough to inline: the default stream is the hot path.
	if d.def != nil && (stream == "" || stream == d.o.Stream) {
		return d.def
	}
	return d.otherLedger(stream)
}

// otherLedger is ledgerFor for a stream other than the default, and for
// the default one while NewDispatcher creates it.
func (d *Dispatcher) otherLedger(stream string) *ledger {
	if stream == "" {
		stream = d.o.Stream
	}
	if l, ok := (*d.ledgers.Load())[stream]; ok {
		return l
	}
	d.ledgerMu.Lock()
	defer d.ledgerMu.Unlock()
	old := *d.ledgers.Load()
	if l, ok := old[stream]; ok {
		return l
	}
	var l *ledger
	if d.o.Gauges != nil {
		l = newLedger(d.o.MaxPending, nil, nil)
		l.share = d.o.Gauges.stream(stream)
		l.setGauge()
	} else {
		l = newLedger(d.o.MaxPending, d.o.Metrics.WatermarkPending.WithLabelValues(stream),
			d.o.Metrics.WatermarkLag.WithLabelValues(stream))
	}
	l.stream = stream
	m := make(map[string]*ledger, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[stream] = l
	d.ledgers.Store(&m)
	return l
}

// eachLedger returns the ledgers in stream name order.
func (d *Dispatcher) eachLedger() []*ledger {
	m := *d.ledgers.Load()
	ls := make([]*ledger, 0, len(m))
	for _, l := range m {
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(a, b *ledger) int { return strings.Compare(a.stream, b.stream) })
	return ls
}

// Submit queues ev for every destination the processor names. It blocks
// while a destination's queue or the stream's watermark ledger is full (the
// stream waits) and returns an error only when ctx is done or the
// dispatcher is closed.
func (d *Dispatcher) Submit(ctx context.Context, ev *Event) error {
	_, err := d.submit(ctx, ev, d.o.Processor.Destinations(ev), -1)
	return err
}

// SubmitTo queues ev for the named destinations, as Submit does; replay
// uses it to send a dead letter back to the one destination that gave up.
func (d *Dispatcher) SubmitTo(ctx context.Context, ev *Event, dests []string) error {
	_, err := d.submit(ctx, ev, dests, -1)
	return err
}

// TrySubmit is Submit that waits at most wait for room in the
// destinations' queues and the stream's ledger: it reports false, having
// queued and registered nothing, when there was none. With several
// processors on a stream, the router uses it to detach a processor whose
// queue stays full instead of holding the stream for the others (Router.Run).
func (d *Dispatcher) TrySubmit(ctx context.Context, ev *Event, wait time.Duration) (bool, error) {
	return d.submit(ctx, ev, d.o.Processor.Destinations(ev), max(wait, 0))
}

// errFull is submit's "no room within the wait".
var errFull = errors.New("queue full")

// submit queues ev for dests. wait < 0 waits for room as long as ctx
// lasts; otherwise submit gives up after wait and reports false.
func (d *Dispatcher) submit(ctx context.Context, ev *Event, dests []string, wait time.Duration) (bool, error) {
	var full <-chan time.Time
	if wait >= 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		full = t.C
	}
	var ds []*destination
	// unwind gives back what a Submit cut short took, so that it registers
	// nothing and the ledger's count stays exact.
	unwind := func() {
		for _, q := range ds {
			<-q.space
			q.users.Add(-1)
		}
	}
	for _, name := range dests {
		dst, err := d.destination(name)
		if err != nil {
			unwind()
			return false, err
		}
		// Room now is taken at once, even when a zero wait has already
		// expired.
		select {
		case dst.space <- struct{}{}:
			ds = append(ds, dst)
			continue
		default:
		}
		select {
		case dst.space <- struct{}{}:
			ds = append(ds, dst)
		case <-full:
			dst.users.Add(-1)
			unwind()
			return false, nil
		case <-ctx.Done():
			dst.users.Add(-1)
			unwind()
			return false, ctx.Err()
		}
	}
	led := d.ledgerFor(ev.Stream)
	seq, err := led.addUntil(ctx, ev.Position(), len(ds), full)
	if err != nil {
		unwind()
		if errors.Is(err, errFull) {
			return false, nil
		}
		return false, err
	}
	if len(ds) == 0 {
		d.o.Log.Debug("no destination for event", "key", ev.Key, "subject", ev.Subject)
	}
	key := ev.Entity
	if key == "" {
		// An event about no object needs no order: a key of its own lets
		// such events go in parallel.
		key = fmt.Sprintf("#%d", seq)
	}
	if led.stream != d.o.Stream {
		// Object names (vm-42) and sequence numbers repeat from one
		// vCenter to the next: events of other streams are ordered per
		// stream and object.
		key = led.stream + "/" + key
	}
	for _, dst := range ds {
		dst.push(&item{ev: ev, key: key, led: led, seq: seq})
		dst.users.Add(-1)
	}
	return true, nil
}

// Done records an event that needs no delivery (a filter dropped or
// dead-lettered it, or this processor does not take it), so the watermark
// of its stream moves past it. It waits while that stream's ledger is full
// and returns an error only when ctx is done.
func (d *Dispatcher) Done(ctx context.Context, ev *Event) error {
	_, err := d.ledgerFor(ev.Stream).add(ctx, ev.Position(), 0)
	return err
}

// DoneAt records a position of the named stream that needs no delivery
// (an undecodable event), as Done does.
func (d *Dispatcher) DoneAt(ctx context.Context, stream string, pos Position) error {
	_, err := d.ledgerFor(stream).add(ctx, pos, 0)
	return err
}

// tryDoneAt is DoneAt that waits at most wait for room in the stream's
// ledger: it reports false, having registered nothing, when there was
// none.
func (d *Dispatcher) tryDoneAt(ctx context.Context, stream string, pos Position, wait time.Duration) (bool, error) {
	t := time.NewTimer(max(wait, 0))
	defer t.Stop()
	_, err := d.ledgerFor(stream).addUntil(ctx, pos, 0, t.C)
	if errors.Is(err, errFull) {
		return false, nil
	}
	return err == nil, err
}

// Watermark returns the position of the named stream ("" is the default
// stream) below which every event is finished for this processor, and
// false before the first one.
func (d *Dispatcher) Watermark(stream string) (Position, bool) {
	if l := d.lookup(stream); l != nil {
		return l.watermark()
	}
	return Position{}, false
}

// Pending returns the number of events of the named stream not finished
// yet and the newest position submitted.
func (d *Dispatcher) Pending(stream string) (int, Position) {
	if l := d.lookup(stream); l != nil {
		return l.pending()
	}
	return 0, Position{}
}

// lookup returns the named stream's ledger, or nil before its first event:
// asking creates none (nor its metric series).
func (d *Dispatcher) lookup(stream string) *ledger {
	if stream == "" {
		stream = d.o.Stream
	}
	return (*d.ledgers.Load())[stream]
}

// Processor returns the processor the dispatcher delivers for.
func (d *Dispatcher) Processor() Processor { return d.o.Processor }

// DeadLetter hands a letter to the sink, counting it; if the sink fails the
// whole event is logged at error level so it is never silently lost. When
// the sink fails because ctx is done (shutting down while a full sink
// blocks), the letter is not kept and DeadLetter returns ctx's error: the
// caller must leave the event unacknowledged, so that a checkpointed router
// reads it again.
func (d *Dispatcher) DeadLetter(ctx context.Context, dl DeadLetter) error {
	if dl.Time.IsZero() {
		dl.Time = time.Now().UTC()
	}
	if err := d.o.Sink.Write(ctx, dl); err != nil {
		if ctx.Err() != nil {
			d.o.Log.Warn("dead letter not written: shutting down; the event stays unacknowledged and is read again at the next start",
				"reason", dl.Reason, "origin", dl.Origin, "key", letterKey(dl), "err", err)
			return ctx.Err()
		}
		d.o.Log.Error("dead-letter sink failed; the event follows in this log line", "err", err,
			"reason", dl.Reason, "event", letterEvent(dl))
	}
	d.o.Metrics.DeadLetters.WithLabelValues(d.o.ProcessorName, dl.Reason).Inc()
	return nil
}

// destination returns the named destination, creating it on first use. The
// caller must release it with users.Add(-1) once its event is pushed: until
// then it is not reaped.
func (d *Dispatcher) destination(name string) (*destination, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("dispatcher closed")
	}
	if dst, ok := d.dests[name]; ok {
		dst.users.Add(1)
		return dst, nil
	}
	dst := &destination{
		d:        d,
		name:     name,
		space:    make(chan struct{}, d.o.QueueSize),
		nudge:    make(chan struct{}, 1),
		depth:    d.o.Metrics.QueueDepth.WithLabelValues(d.o.ProcessorName, name),
		held:     d.o.Metrics.DestinationHeld.WithLabelValues(d.o.ProcessorName, name),
		entities: map[string][]*item{},
		lastBusy: time.Now(),
	}
	dst.held.Set(0)
	for i, r := range results {
		dst.res[i] = d.o.Metrics.Deliveries.WithLabelValues(d.o.ProcessorName, name, r)
	}
	dst.users.Add(1)
	d.dests[name] = dst
	d.ndests.Store(int32(len(d.dests)))
	d.wg.Add(1)
	go dst.loop()
	return dst, nil
}

// results are the result labels of eventrouter_processor_deliveries_total,
// indexed by resOK and the others.
var results = [...]string{"ok", "retry", "failed", "dead_letter"}

// reap removes the destination if it is still idle and nobody is about to
// queue an event for it, deleting its metric series. It reports whether it
// did; the loop then ends.
func (dst *destination) reap() bool {
	d := dst.d
	d.mu.Lock()
	defer d.mu.Unlock()
	dst.mu.Lock()
	idle := dst.queued == 0 && dst.inflight == 0 && dst.users.Load() == 0 && len(dst.space) == 0 &&
		time.Since(dst.lastBusy) >= d.o.IdleTimeout
	dst.mu.Unlock()
	if !idle {
		return false
	}
	delete(d.dests, dst.name)
	d.ndests.Store(int32(len(d.dests)))
	m, proc := d.o.Metrics, d.o.ProcessorName
	m.QueueDepth.DeleteLabelValues(proc, dst.name)
	m.DestinationHeld.DeleteLabelValues(proc, dst.name)
	for _, r := range results {
		m.Deliveries.DeleteLabelValues(proc, dst.name, r)
	}
	d.o.Log.Debug("idle destination released", "processor", proc, "destination", dst.name)
	// The others' share of the slots may have grown.
	for _, o := range d.dests {
		o.wake()
	}
	return true
}

func (dst *destination) push(it *item) {
	dst.mu.Lock()
	q := dst.entities[it.key]
	dst.entities[it.key] = append(q, it)
	if len(q) == 0 {
		dst.ready = append(dst.ready, it.key)
	}
	dst.queued++
	dst.depth.Set(float64(dst.queued))
	batch, wake := dst.startLocked()
	dst.mu.Unlock()
	dst.start(batch, wake)
}

// startLocked takes a batch for a call that may start at once, without
// waiting: a free slot, the destination not held, no linger. Submit, a
// retry coming due and a call ending start it themselves rather than wake
// the loop to start it: at a trickle each hand-off between goroutines
// wakes a sleeping thread, and that, not the work, is most of an event's
// CPU time. Otherwise it reports whether the loop must be woken: it holds
// the probes of a held destination, lingers for batches and waits for a
// slot another destination holds. With this destination's slots all in
// use nobody needs waking: each of its calls, when it ends, starts the next.
// A batch taken holds a slot and a count in d.wg (added here, under mu,
// while the loop has not ended: Close's wg.Wait cannot have returned).
// The caller holds dst.mu.
func (dst *destination) startLocked() (batch []*item, wake bool) {
	d := dst.d
	switch {
	case len(dst.ready) == 0 || dst.stopped || d.ctx.Err() != nil:
		return nil, false
	case dst.outage > 0 || d.batch.Linger > 0:
		return nil, true
	case dst.busyLocked():
		return nil, false
	}
	select {
	case d.sem <- struct{}{}:
	default:
		return nil, true
	}
	batch = dst.takeLocked(nil)
	dst.inflight++
	d.wg.Add(1)
	// The loop starts the rest up to the slots, as in a burst.
	return batch, len(dst.ready) > 0
}

// start starts the call startLocked took a batch for, and wakes the loop
// when startLocked says so.
func (dst *destination) start(batch []*item, wake bool) {
	if len(batch) > 0 {
		go dst.deliver(batch, 0)
	}
	if wake {
		dst.wake()
	}
}

// busyLocked reports whether the destination may not start another call:
// its slots are in use, or it is held and its one probe is in flight (a
// throttled destination must not be answered with a burst). The caller
// holds dst.mu.
func (dst *destination) busyLocked() bool {
	return dst.inflight >= dst.d.slots() || (dst.outage > 0 && dst.inflight > 0)
}

// slots is how many delivery calls one destination may have in flight: all
// of them while it is the only one, else half. Half rather than a fair
// share of the destinations: many functions are known, few busy at a time,
// and a busy one should not be held to a small share. The cap follows the
// destinations that exist (not yet released for idleness): a slot that a
// hanging call holds cannot be taken back, so a function that turns up
// while another one's calls hang gets its first slot when one of those
// calls times out.
func (d *Dispatcher) slots() int {
	if d.ndests.Load() > 1 {
		return max(1, d.o.Concurrency/2)
	}
	return d.o.Concurrency
}

func (dst *destination) wake() {
	select {
	case dst.nudge <- struct{}{}:
	default:
	}
}

// loop sends ready entities' head events that nobody else starts (see
// startLocked), one delivery call per event or per batch, each holding one
// of the dispatcher's concurrency slots: the probes of a held destination,
// lingering batches, calls waiting for a slot, the rest of a burst. It ends
// when the dispatcher stops or the destination has been idle for
// IdleTimeout.
func (dst *destination) loop() {
	d := dst.d
	defer d.wg.Done()
	defer func() {
		dst.mu.Lock()
		dst.stopped = true
		dst.mu.Unlock()
	}()
	var timer *time.Timer
	// idle is always armed: calls ending do not wake the loop (see
	// startLocked), so it looks now and then whether the destination has
	// been idle long enough, at most twice per IdleTimeout.
	idle := time.NewTimer(d.o.IdleTimeout)
	defer func() {
		idle.Stop()
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		dst.mu.Lock()
		var wait time.Duration
		if dst.outage > 0 {
			wait = time.Until(dst.probe)
		}
		n := len(dst.ready)
		busy := dst.busyLocked()
		dst.mu.Unlock()
		if n == 0 || wait > 0 || busy {
			var tc <-chan time.Time
			if n > 0 && wait > 0 && !busy {
				timer = resetTimer(timer, wait)
				tc = timer.C
			}
			select {
			case <-dst.nudge:
			case <-tc:
			case <-idle.C:
				if dst.reap() {
					return
				}
				idle.Reset(dst.idleLeft())
			case <-d.ctx.Done():
				return
			}
			continue
		}
		select {
		case d.sem <- struct{}{}:
		case <-d.ctx.Done():
			return
		}
		batch, probe := dst.take()
		if len(batch) < d.batch.MaxEvents && d.batch.Linger > 0 && len(batch) > 0 {
			// Wait a little for more events to fill the batch; whatever
			// arrives meanwhile joins it.
			timer = resetTimer(timer, d.batch.Linger)
			select {
			case <-timer.C:
			case <-d.ctx.Done():
			}
			batch = append(batch, dst.takeMore(batch)...)
		}
		if len(batch) == 0 {
			<-d.sem
			continue
		}
		d.wg.Add(1)
		go dst.deliver(batch, probe)
	}
}

func resetTimer(t *time.Timer, d time.Duration) *time.Timer {
	if t == nil {
		return time.NewTimer(d)
	}
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
	return t
}

// idleLeft is how long before the destination will have been idle for
// IdleTimeout; a whole IdleTimeout while it is busy, or when reap found a
// Submit about to queue an event.
func (dst *destination) idleLeft() time.Duration {
	dst.mu.Lock()
	defer dst.mu.Unlock()
	left := dst.d.o.IdleTimeout - time.Since(dst.lastBusy)
	if dst.queued > 0 || dst.inflight > 0 || left <= 0 {
		return dst.d.o.IdleTimeout
	}
	return left
}

// take removes up to a batch of ready entities and returns their heads,
// counting one call in flight when there are any. probe is the outage's
// number when the call is a probe of a held destination, else 0. It takes
// nothing when the destination is busy: calls started outside the loop
// since it looked may have taken the slots.
func (dst *destination) take() (batch []*item, probe uint64) {
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if dst.busyLocked() {
		return nil, 0
	}
	batch = dst.takeLocked(nil)
	if len(batch) > 0 {
		dst.inflight++
	}
	if dst.outage > 0 {
		probe = dst.epoch
	}
	return batch, probe
}

// takeMore adds to a batch that take started.
func (dst *destination) takeMore(have []*item) []*item {
	dst.mu.Lock()
	defer dst.mu.Unlock()
	return dst.takeLocked(have)
}

func (dst *destination) takeLocked(have []*item) []*item {
	limits := dst.d.batch
	size := 0
	if limits.Size != nil {
		for _, it := range have {
			size += limits.Size(it.ev)
		}
	}
	var out []*item
	for len(dst.ready) > 0 && len(have)+len(out) < limits.MaxEvents {
		it := dst.entities[dst.ready[0]][0]
		if limits.Size != nil && limits.MaxBytes > 0 && len(have)+len(out) > 0 {
			s := limits.Size(it.ev)
			if size+s > limits.MaxBytes {
				break
			}
			size += s
		} else if limits.Size != nil {
			size += limits.Size(it.ev)
		}
		dst.ready = dst.ready[1:]
		out = append(out, it)
	}
	return out
}

// deliver makes the call for batch, then the calls that can start as it
// ends, one after the other (startLocked), instead of leaving them to a
// new goroutine.
func (dst *destination) deliver(batch []*item, probe uint64) {
	for len(batch) > 0 {
		next := dst.call(batch, probe)
		dst.d.wg.Done()
		batch, probe = next, 0
	}
}

// call delivers one batch and handles the results; it returns the next
// batch to deliver, as startLocked took it, if any.
func (dst *destination) call(batch []*item, probe uint64) []*item {
	d := dst.d
	evs := make([]*Event, len(batch))
	for i, it := range batch {
		evs[i] = it.ev
	}
	start := time.Now()
	errs := d.o.Processor.Deliver(d.ctx, dst.name, evs)
	d.o.Metrics.DeliveryDuration.WithLabelValues(d.o.ProcessorName).Observe(time.Since(start).Seconds())
	<-d.sem
	if len(errs) != len(batch) {
		// A processor bug: treat every event as failed rather than guess.
		err := fmt.Errorf("processor returned %d results for %d events", len(errs), len(batch))
		errs = make([]error, len(batch))
		for i := range errs {
			errs[i] = err
		}
	}
	var heldKeys []string
	var heldErr error
	for i, it := range batch {
		if dst.finish(it, errs[i]) {
			heldKeys = append(heldKeys, it.key)
			if heldErr == nil {
				heldErr = errs[i]
			}
		}
	}
	end := time.Now()
	dst.mu.Lock()
	dst.inflight--
	dst.lastBusy = end
	startOutage, endOutage := false, false
	var heldFor time.Duration
	switch {
	case len(heldKeys) > 0:
		// One hold per call, however many events it carried. The events
		// go back to the front: no attempt is counted against them.
		dst.ready = append(heldKeys, dst.ready...)
		dst.outage++
		dst.heldReason = oneLine(heldErr.Error())
		if dst.outage == 1 {
			startOutage = true
			dst.epoch++
			dst.heldSince = time.Now()
			dst.held.Set(1)
		}
		dst.probe = time.Now().Add(backoff(d.o.BackoffMin, min(d.o.BackoffMax, HoldMax), dst.outage))
	case dst.outage > 0 && probe == dst.epoch && d.ctx.Err() == nil:
		// The destination answered for itself (delivered, or failed one
		// event at a time): it works again. Only a probe ends the outage;
		// a call taken before it began says nothing about the destination
		// now.
		endOutage, heldFor = true, time.Since(dst.heldSince)
		dst.outage = 0
		dst.probe = time.Time{}
		dst.heldReason = ""
		dst.held.Set(0)
	}
	next, wake := dst.startLocked()
	dst.mu.Unlock()
	if startOutage {
		d.o.Log.Warn("destination held as a whole; holding its events until it is back, no attempt counted",
			"processor", d.o.ProcessorName, "destination", dst.name, "err", heldErr)
	}
	if endOutage {
		d.o.Log.Info("destination back; delivering its held events", "processor", d.o.ProcessorName,
			"destination", dst.name, "held_for", heldFor.Round(time.Second).String())
	}
	if wake {
		dst.wake()
	}
	return next
}

// finish handles one event's delivery result. It reports whether the
// destination failed as a whole, leaving the event for deliver to hold.
func (dst *destination) finish(it *item, err error) bool {
	d := dst.d
	switch {
	case err == nil:
		dst.res[resOK].Inc()
		d.stat.Invocation(it.ev.Subject)
		d.o.Metrics.DeliveryLag.WithLabelValues(d.o.ProcessorName).Observe(time.Since(it.ev.Time).Seconds())
		d.o.Log.Debug("delivered", "destination", dst.name, "key", it.ev.Key, "subject", it.ev.Subject, "attempts", it.attempts+1)
		dst.pop(it)
		if d.o.Finished != nil {
			d.o.Finished(it.ev, dst.name, "ok")
		}
	case d.ctx.Err() != nil:
		// Shutting down: the event stays unacknowledged and is replayed
		// from the checkpoint; nothing to count.
		return false
	case IsUnreachable(err):
		dst.res[resFailed].Inc()
		return true
	case IsPermanent(err):
		dst.deadLetter(it, "rejected", err)
	default:
		dst.mu.Lock()
		it.attempts++
		it.err = err
		attempts := it.attempts
		dst.mu.Unlock()
		if d.o.RetryLimit > 0 && attempts >= d.o.RetryLimit {
			dst.deadLetter(it, "retry_limit", err)
			return false
		}
		dst.res[resRetry].Inc()
		if attempts == 1 {
			d.o.Log.Warn("delivery failed; retrying", "processor", d.o.ProcessorName, "destination", dst.name,
				"key", it.ev.Key, "subject", it.ev.Subject, "err", err)
		}
		wait := max(backoff(d.o.BackoffMin, d.o.BackoffMax, attempts), RetryAfterOf(err))
		time.AfterFunc(wait, func() {
			dst.mu.Lock()
			dst.ready = append(dst.ready, it.key)
			batch, wake := dst.startLocked()
			dst.mu.Unlock()
			dst.start(batch, wake)
		})
	}
	return false
}

func (dst *destination) deadLetter(it *item, reason string, err error) {
	d := dst.d
	if d.DeadLetter(d.ctx, DeadLetter{
		Event: it.ev, Origin: OriginProcessor, Processor: d.o.ProcessorName,
		Destination: dst.name, Reason: reason, Error: err.Error(), Attempts: max(it.attempts, 1),
	}) != nil {
		// Shutting down and the letter was not kept: the event stays
		// unacknowledged, to be read again at the next start.
		return
	}
	dst.res[resDeadLetter].Inc()
	d.o.Log.Error("delivery given up; event dead-lettered", "processor", d.o.ProcessorName, "destination", dst.name,
		"key", it.ev.Key, "subject", it.ev.Subject, "reason", reason, "attempts", it.attempts, "err", err)
	dst.pop(it)
	if d.o.Finished != nil {
		d.o.Finished(it.ev, dst.name, "dead_letter")
	}
}

// pop removes a finished head event, readies its entity's next event, frees
// its queue slot and acknowledges it.
func (dst *destination) pop(it *item) {
	dst.mu.Lock()
	q := dst.entities[it.key]
	if len(q) <= 1 {
		delete(dst.entities, it.key)
	} else {
		q[0] = nil
		dst.entities[it.key] = q[1:]
		dst.ready = append(dst.ready, it.key)
	}
	dst.queued--
	dst.depth.Set(float64(dst.queued))
	dst.mu.Unlock()
	<-dst.space
	it.led.done(it.seq)
}

// backoff returns the wait before attempt n+1: exponential from lo, capped
// at hi, with equal jitter so retries of many events spread out.
func backoff(lo, hi time.Duration, n int) time.Duration {
	b := lo
	for i := 1; i < n && b < hi; i++ {
		b *= 2
	}
	b = min(b, hi)
	return b/2 + rand.N(b/2+1)
}

// Degraded returns /readyz's degraded lines, without the "degraded: "
// prefix: the stream when its oldest unacknowledged event has waited longer
// than DegradedAfter (the checkpoint is stuck there), naming the
// destinations it waits for, and each held destination.
func (d *Dispatcher) Degraded() []string {
	now := time.Now()
	d.mu.Lock()
	dests := make([]*destination, 0, len(d.dests))
	for _, dst := range d.dests {
		dests = append(dests, dst)
	}
	d.mu.Unlock()
	slices.SortFunc(dests, func(a, b *destination) int { return strings.Compare(a.name, b.name) })

	var lines []string
	for _, led := range d.eachLedger() {
		o, ok := led.oldest()
		if !ok || now.Sub(o.since) < d.o.DegradedAfter {
			continue
		}
		var waits []string
		for _, dst := range dests {
			if w, ok := dst.waiting(led, o.seq); ok {
				waits = append(waits, w)
			}
		}
		if len(waits) == 0 {
			waits = []string{"queueing"}
		}
		paused := ""
		if o.full {
			paused = ", the cap: reading paused"
		}
		lines = append(lines, fmt.Sprintf("stream %s: held for %s by processor %s (%s); the checkpoint waits at event key %d created %s, %d events unacknowledged%s",
			led.stream, now.Sub(o.since).Round(time.Second), d.o.ProcessorName, strings.Join(waits, "; "),
			o.pos.Key, o.pos.Time.UTC().Format(time.RFC3339), o.held, paused))
	}
	for _, dst := range dests {
		dst.mu.Lock()
		if dst.outage > 0 {
			lines = append(lines, fmt.Sprintf("processor %s: destination %s held since %s (%s): %s",
				d.o.ProcessorName, dst.name, dst.heldSince.UTC().Format(time.RFC3339),
				now.Sub(dst.heldSince).Round(time.Second), dst.heldReason))
		}
		dst.mu.Unlock()
	}
	return lines
}

// waiting describes why the event numbered seq in led is still at the
// destination, or reports false when it is not there.
func (dst *destination) waiting(led *ledger, seq uint64) (string, bool) {
	dst.mu.Lock()
	defer dst.mu.Unlock()
	for _, q := range dst.entities {
		// Each entity's events are in stream order, and everything before
		// the oldest unfinished event is finished: it can only be a head.
		it := q[0]
		if it.led != led || it.seq != seq {
			continue
		}
		switch {
		case dst.outage > 0:
			return fmt.Sprintf("destination %s held: %s", dst.name, dst.heldReason), true
		case it.err != nil:
			return fmt.Sprintf("destination %s failing, %d attempts: %s", dst.name, it.attempts, oneLine(it.err.Error())), true
		default:
			return fmt.Sprintf("destination %s delivering", dst.name), true
		}
	}
	return "", false
}

// oneLine makes an error message fit one /readyz line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const limit = 300
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "..."
	}
	return s
}

// Idle reports whether nothing is queued or in flight.
func (d *Dispatcher) Idle() bool { return d.unfinished() == 0 }

// unfinished counts the events of every stream not finished yet.
func (d *Dispatcher) unfinished() int {
	n := 0
	for _, l := range *d.ledgers.Load() {
		p, _ := l.pending()
		n += p
	}
	return n
}

// Close stops accepting events and waits until everything queued is
// finished or ctx is done; then it abandons what is left (unacknowledged,
// so a checkpointed router replays it) and stops.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
	for !d.Idle() {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("%d events still in flight at shutdown: %w", d.unfinished(), ctx.Err())
		case <-tick.C:
			continue
		}
		break
	}
	d.cancel()
	d.wg.Wait()
	return err
}
