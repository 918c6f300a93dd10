package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
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
)

// Dispatcher delivers events for one processor. Each destination has a
// bounded queue; events about the same vSphere object (Event.Entity) reach a
// destination one at a time and in order, while different objects go in
// parallel up to Concurrency. A failed delivery is retried with capped
// backoff and jitter, up to RetryLimit attempts, then dead-lettered; an
// unreachable destination is held (no attempt counted) and its full queue
// holds the stream: backpressure, never loss.
type Dispatcher struct {
	o      DispatcherOptions
	batch  BatchLimits
	sem    chan struct{} // deliveries in flight
	ledger ledger
	stat   *metrics.Stat
	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc

	mu     sync.Mutex
	dests  map[string]*destination
	closed bool
	wg     sync.WaitGroup // destination loops and deliveries
}

// item is one event on its way to one destination.
type item struct {
	ev       *Event
	key      string // ordering key: the entity, or unique when it has none
	seq      uint64
	attempts int
	first    error // the first failure, logged once
}

// destination is one queue: an OpenFaaS function, the EventBridge bus.
type destination struct {
	d     *Dispatcher
	name  string
	space chan struct{} // one token per queued event: the queue bound
	nudge chan struct{} // wakes the loop
	depth prometheus.Gauge
	res   [4]prometheus.Counter // ok, retry, failed, dead_letter

	mu       sync.Mutex
	entities map[string][]*item // per-entity FIFO; the head is in flight or waiting
	ready    []string           // entities whose head may be sent now
	queued   int
	held     time.Time // unreachable: no delivery before this
	outage   int       // consecutive unreachable results
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
	d := &Dispatcher{o: o, sem: make(chan struct{}, o.Concurrency), dests: map[string]*destination{}}
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

// Submit queues ev for every destination the processor names. It blocks
// while a destination's queue is full (the stream waits) and returns an
// error only when ctx is done or the dispatcher is closed.
func (d *Dispatcher) Submit(ctx context.Context, ev *Event) error {
	return d.SubmitTo(ctx, ev, d.o.Processor.Destinations(ev))
}

// SubmitTo queues ev for the named destinations, as Submit does; replay
// uses it to send a dead letter back to the one destination that gave up.
func (d *Dispatcher) SubmitTo(ctx context.Context, ev *Event, dests []string) error {
	var ds []*destination
	for _, name := range dests {
		dst, err := d.destination(name)
		if err != nil {
			return err
		}
		// Taking the queue tokens before registering keeps the ledger's
		// count exact: a Submit cut short by ctx registers nothing.
		select {
		case dst.space <- struct{}{}:
			ds = append(ds, dst)
		case <-ctx.Done():
			for _, q := range ds {
				<-q.space
			}
			return ctx.Err()
		}
	}
	seq := d.ledger.add(ev.Position(), len(ds))
	if len(ds) == 0 {
		d.o.Log.Debug("no destination for event", "key", ev.Key, "subject", ev.Subject)
	}
	key := ev.Entity
	if key == "" {
		// An event about no object needs no order: a key of its own lets
		// such events go in parallel.
		key = fmt.Sprintf("#%d", seq)
	}
	for _, dst := range ds {
		dst.push(&item{ev: ev, key: key, seq: seq})
	}
	return nil
}

// Done records an event that needs no delivery (a filter dropped or
// dead-lettered it), so the watermark moves past it.
func (d *Dispatcher) Done(ev *Event) {
	d.DoneAt(ev.Position())
}

// DoneAt records a position that needs no delivery (an undecodable event).
func (d *Dispatcher) DoneAt(pos Position) {
	d.ledger.add(pos, 0)
}

// Watermark returns the position below which every event is finished, and
// false before the first one.
func (d *Dispatcher) Watermark() (Position, bool) { return d.ledger.watermark() }

// Pending returns the number of events not finished yet and the newest
// position submitted.
func (d *Dispatcher) Pending() (int, Position) { return d.ledger.pending() }

// DeadLetter hands a letter to the sink, counting it; if the sink fails the
// whole event is logged at error level so it is never silently lost.
func (d *Dispatcher) DeadLetter(ctx context.Context, dl DeadLetter) {
	if dl.Time.IsZero() {
		dl.Time = time.Now().UTC()
	}
	d.o.Metrics.DeadLetters.WithLabelValues(d.o.ProcessorName, dl.Reason).Inc()
	if err := d.o.Sink.Write(ctx, dl); err != nil {
		d.o.Log.Error("dead-letter sink failed; the event follows in this log line", "err", err,
			"reason", dl.Reason, "event", letterEvent(dl))
	}
}

func (d *Dispatcher) destination(name string) (*destination, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("dispatcher closed")
	}
	if dst, ok := d.dests[name]; ok {
		return dst, nil
	}
	dst := &destination{
		d:        d,
		name:     name,
		space:    make(chan struct{}, d.o.QueueSize),
		nudge:    make(chan struct{}, 1),
		depth:    d.o.Metrics.QueueDepth.WithLabelValues(d.o.ProcessorName, name),
		entities: map[string][]*item{},
	}
	for i, r := range []string{"ok", "retry", "failed", "dead_letter"} {
		dst.res[i] = d.o.Metrics.Deliveries.WithLabelValues(d.o.ProcessorName, name, r)
	}
	d.dests[name] = dst
	d.wg.Add(1)
	go dst.loop()
	return dst, nil
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
	dst.mu.Unlock()
	dst.wake()
}

func (dst *destination) wake() {
	select {
	case dst.nudge <- struct{}{}:
	default:
	}
}

// loop sends ready entities' head events, one delivery call per event or per
// batch, each holding one of the dispatcher's concurrency slots.
func (dst *destination) loop() {
	d := dst.d
	defer d.wg.Done()
	var timer *time.Timer
	for {
		dst.mu.Lock()
		wait := time.Until(dst.held)
		n := len(dst.ready)
		dst.mu.Unlock()
		if n == 0 || wait > 0 {
			var tc <-chan time.Time
			if n > 0 && wait > 0 {
				timer = resetTimer(timer, wait)
				tc = timer.C
			}
			select {
			case <-dst.nudge:
			case <-tc:
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
		batch := dst.take()
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
		go dst.deliver(batch)
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

// take removes up to a batch of ready entities and returns their heads.
func (dst *destination) take() []*item {
	return dst.takeMore(nil)
}

func (dst *destination) takeMore(have []*item) []*item {
	limits := dst.d.batch
	size := 0
	if limits.Size != nil {
		for _, it := range have {
			size += limits.Size(it.ev)
		}
	}
	var out []*item
	dst.mu.Lock()
	defer dst.mu.Unlock()
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

func (dst *destination) deliver(batch []*item) {
	d := dst.d
	defer d.wg.Done()
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
	unreachable := false
	for i, it := range batch {
		unreachable = dst.finish(it, errs[i]) || unreachable
	}
	if unreachable {
		// One hold per call, however many events it carried.
		dst.mu.Lock()
		dst.outage++
		if dst.outage == 1 {
			d.o.Log.Warn("destination unreachable; holding its events until it is back", "processor", d.o.ProcessorName,
				"destination", dst.name, "err", errs[0])
		}
		dst.held = time.Now().Add(backoff(d.o.BackoffMin, min(d.o.BackoffMax, HoldMax), dst.outage))
		dst.mu.Unlock()
	}
	dst.wake()
}

// finish handles one event's delivery result. It reports whether the
// destination was unreachable.
func (dst *destination) finish(it *item, err error) bool {
	d := dst.d
	switch {
	case err == nil:
		dst.res[resOK].Inc()
		d.stat.Invocation(it.ev.Subject)
		d.o.Metrics.DeliveryLag.WithLabelValues(d.o.ProcessorName).Observe(time.Since(it.ev.Time).Seconds())
		d.o.Log.Debug("delivered", "destination", dst.name, "key", it.ev.Key, "subject", it.ev.Subject, "attempts", it.attempts+1)
		dst.mu.Lock()
		if dst.outage > 0 {
			d.o.Log.Info("destination reachable again", "processor", d.o.ProcessorName, "destination", dst.name)
		}
		dst.outage = 0
		dst.held = time.Time{}
		dst.mu.Unlock()
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
		dst.mu.Lock()
		dst.ready = append([]string{it.key}, dst.ready...)
		dst.mu.Unlock()
		return true
	case IsPermanent(err):
		dst.deadLetter(it, "rejected", err)
	default:
		it.attempts++
		if d.o.RetryLimit > 0 && it.attempts >= d.o.RetryLimit {
			dst.deadLetter(it, "retry_limit", err)
			return false
		}
		dst.res[resRetry].Inc()
		if it.first == nil {
			it.first = err
			d.o.Log.Warn("delivery failed; retrying", "processor", d.o.ProcessorName, "destination", dst.name,
				"key", it.ev.Key, "subject", it.ev.Subject, "err", err)
		}
		wait := backoff(d.o.BackoffMin, d.o.BackoffMax, it.attempts)
		time.AfterFunc(wait, func() {
			dst.mu.Lock()
			dst.ready = append(dst.ready, it.key)
			dst.mu.Unlock()
			dst.wake()
		})
	}
	return false
}

func (dst *destination) deadLetter(it *item, reason string, err error) {
	d := dst.d
	dst.res[resDeadLetter].Inc()
	d.o.Log.Error("delivery given up; event dead-lettered", "processor", d.o.ProcessorName, "destination", dst.name,
		"key", it.ev.Key, "subject", it.ev.Subject, "reason", reason, "attempts", it.attempts, "err", err)
	d.DeadLetter(d.ctx, DeadLetter{
		Event: it.ev, Origin: OriginProcessor, Processor: d.o.ProcessorName, Destination: dst.name,
		Reason: reason, Error: err.Error(), Attempts: max(it.attempts, 1),
	})
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
	dst.d.ledger.done(it.seq)
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

// Idle reports whether nothing is queued or in flight.
func (d *Dispatcher) Idle() bool {
	n, _ := d.ledger.pending()
	return n == 0
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
			n, _ := d.ledger.pending()
			err = fmt.Errorf("%d events still in flight at shutdown: %w", n, ctx.Err())
		case <-tick.C:
			continue
		}
		break
	}
	d.cancel()
	d.wg.Wait()
	return err
}
