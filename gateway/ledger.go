package gateway

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// ledger tracks which events the dispatcher has finished with, in stream
// order, and derives the watermark: the position of the newest event such
// that it and every event before it are acknowledged (delivered to every
// destination, dropped by a filter, or dead-lettered). That, not the last
// event read, is what a checkpoint may record: resuming after it loses
// nothing.
//
// The ledger holds every entry from the oldest unfinished one on, finished
// or not, so one event held at a destination keeps every later event in
// it. It is capped, as Benthos' capped checkpointer is: at max entries, add
// waits until the oldest entry finishes. That turns a held event into
// backpressure on the stream instead of memory growing without bound and a
// checkpoint falling ever further behind.
type ledger struct {
	stream string           // the stream's name, for /readyz
	max    int              // entries held before add waits
	gauge  prometheus.Gauge // entries held (eventrouter_watermark_pending_events)
	lag    prometheus.Gauge // newest minus watermark (eventrouter_watermark_lag_seconds)
	// share, when set, replaces gauge and lag: the stream's gauges shared
	// with the other processors' ledgers of the stream.
	share *streamGauge

	mu      sync.Mutex
	next    uint64 // sequence number of the next entry
	head    uint64 // sequence number of entries[0]
	entries []ledgerEntry
	since   time.Time           // when entries[0] became the oldest entry
	space   chan struct{}       // closed when a full ledger frees room; nil while nobody waits
	mark    Position            // the watermark, before late events
	late    map[uint64]Position // unfinished late events by sequence number
	hasMark bool
	newest  Position // the newest event registered
}

type ledgerEntry struct {
	pos       Position
	remaining int // destinations still to finish; 0 is done
}

// newLedger returns a ledger of at most max entries; the gauges may be nil.
func newLedger(max int, gauge, lag prometheus.Gauge) *ledger {
	return &ledger{max: max, gauge: gauge, lag: lag}
}

// add registers an event that must finish remaining times (once per
// destination) and returns its sequence number; remaining 0 is done at
// once. While the ledger is full it waits for room, or returns ctx's error.
func (l *ledger) add(ctx context.Context, pos Position, remaining int) (uint64, error) {
	return l.addUntil(ctx, pos, remaining, nil)
}

// addUntil is add that gives up with errFull when full fires first.
func (l *ledger) addUntil(ctx context.Context, pos Position, remaining int, full <-chan time.Time) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.entries) >= l.max {
		if l.space == nil {
			l.space = make(chan struct{})
		}
		space := l.space
		l.mu.Unlock()
		select {
		case <-space:
		case <-full:
			l.mu.Lock()
			return 0, errFull
		case <-ctx.Done():
			l.mu.Lock()
			return 0, ctx.Err()
		}
		l.mu.Lock()
	}
	seq := l.next
	l.next++
	if pos.Before(l.newest) {
		// A late event (created before events already read): until it
		// finishes, the watermark may be past it, so watermark reports
		// a position just before it.
		if remaining > 0 {
			if l.late == nil {
				l.late = map[uint64]Position{}
			}
			l.late[seq] = pos
		}
	} else {
		l.newest = pos
	}
	if len(l.entries) == 0 && remaining > 0 {
		l.since = time.Now()
	}
	l.entries = append(l.entries, ledgerEntry{pos: pos, remaining: remaining})
	l.advance()
	l.setGauge()
	return seq, nil
}

// done records that one destination finished with event seq.
func (l *ledger) done(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := seq - l.head
	if seq < l.head || i >= uint64(len(l.entries)) || l.entries[i].remaining == 0 {
		return // a bug elsewhere must not corrupt the watermark
	}
	l.entries[i].remaining--
	if l.entries[i].remaining == 0 && len(l.late) > 0 {
		delete(l.late, seq)
	}
	if i == 0 {
		if l.advance() {
			l.since = time.Now()
		}
		l.setGauge()
	}
}

// advance moves the watermark over the finished prefix and reports whether
// a new unfinished entry is now the oldest.
func (l *ledger) advance() bool {
	n := 0
	for n < len(l.entries) && l.entries[n].remaining == 0 {
		n++
	}
	if n == 0 {
		return false
	}
	// The watermark never moves back: a late event (handed on after newer
	// ones, its CreatedTime before theirs) finishing last must not pull the
	// checkpoint back and have everything since delivered again.
	for _, e := range l.entries[:n] {
		if !l.hasMark || l.mark.Before(e.pos) {
			l.mark, l.hasMark = e.pos, true
		}
	}
	l.head += uint64(n)
	if n == len(l.entries) {
		// Empty: keep the backing array for the next entries.
		l.entries = l.entries[:0]
	} else {
		// Re-slicing keeps the backing array; copy down once it is mostly
		// consumed so memory stays bounded by what is in flight.
		l.entries = l.entries[n:]
		if cap(l.entries) > 1024 && len(l.entries) < cap(l.entries)/4 {
			l.entries = append([]ledgerEntry(nil), l.entries...)
		}
	}
	if l.space != nil && len(l.entries) < l.max {
		close(l.space)
		l.space = nil
	}
	return len(l.entries) > 0
}

func (l *ledger) setGauge() {
	if l.share != nil {
		l.setShared()
		return
	}
	// The lag is kept here, where both ends change, rather than sampled
	// by the checkpoint writer: it then works without a state directory.
	if l.lag != nil && l.hasMark {
		l.lag.Set(max(l.newest.Time.Sub(l.mark.Time).Seconds(), 0))
	}
	if l.gauge != nil {
		l.gauge.Set(float64(len(l.entries)))
	}
}

// watermark returns the watermark, and false while no event has finished.
func (l *ledger) watermark() (Position, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mark, ok := l.mark, l.hasMark
	if !ok {
		return mark, ok
	}
	// Every event after the finished prefix came in stream order, at or
	// after the mark, except late ones: the position safe to resume after
	// is the mark or just before the oldest unfinished late event.
	for _, pos := range l.late {
		if !pos.Before(mark) {
			continue
		}
		// Just before the late event, so that a restart reads it again.
		before := Position{Time: pos.Time, Key: pos.Key - 1}
		if pos.Key == math.MinInt32 {
			before = Position{Time: pos.Time.Add(-time.Nanosecond), Key: math.MaxInt32}
		}
		if before.Before(mark) {
			mark = before
		}
	}
	return mark, ok
}

// pending returns how many registered events are not finished, and the
// newest registered position.
func (l *ledger) pending() (int, Position) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries), l.newest
}

// oldest describes the oldest unfinished entry: its sequence number and
// position, since when it has been the oldest, and how many entries the
// ledger holds. ok is false when the ledger is empty.
type oldest struct {
	seq   uint64
	pos   Position
	since time.Time
	held  int
	full  bool
}

func (l *ledger) oldest() (o oldest, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) == 0 {
		return oldest{}, false
	}
	return oldest{seq: l.head, pos: l.entries[0].pos, since: l.since, held: len(l.entries),
		full: len(l.entries) >= l.max}, true
}

// setShared reports the ledger's values to the stream's shared gauges.
func (l *ledger) setShared() {
	lag := -1.0
	if l.hasMark {
		lag = max(l.newest.Time.Sub(l.mark.Time).Seconds(), 0)
	}
	l.share.set(l, float64(len(l.entries)), lag)
}

// StreamGauges holds each stream's eventrouter_watermark_pending_events
// and eventrouter_watermark_lag_seconds when several processors take a
// stream: each processor's dispatcher keeps a ledger of the stream, and the
// stream's gauges show the one furthest behind (the most events pending,
// the largest lag), which is what holds the stream's checkpoint. Share one
// among the dispatchers (DispatcherOptions.Gauges); a dispatcher without
// one sets the gauges itself, as the only processor of its streams.
type StreamGauges struct {
	m *metrics.Metrics

	mu      sync.Mutex
	streams map[string]*streamGauge
}

// NewStreamGauges returns the shared gauges of m.
func NewStreamGauges(m *metrics.Metrics) *StreamGauges {
	return &StreamGauges{m: m, streams: map[string]*streamGauge{}}
}

func (g *StreamGauges) stream(name string) *streamGauge {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.streams[name]
	if !ok {
		s = &streamGauge{pending: g.m.WatermarkPending.WithLabelValues(name), lag: g.m.WatermarkLag.WithLabelValues(name),
			of: map[*ledger][2]float64{}}
		g.streams[name] = s
	}
	return s
}

// streamGauge is one stream's pair of gauges and each ledger's values.
type streamGauge struct {
	pending, lag prometheus.Gauge

	mu sync.Mutex
	of map[*ledger][2]float64 // pending, lag (-1: no watermark yet)
}

// set records l's values and sets the gauges to the maxima. The caller
// holds l.mu; s.mu is taken after it, never before.
func (s *streamGauge) set(l *ledger, pending, lag float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.of[l] = [2]float64{pending, lag}
	p, g := 0.0, -1.0
	for _, v := range s.of {
		p, g = max(p, v[0]), max(g, v[1])
	}
	s.pending.Set(p)
	if g >= 0 {
		s.lag.Set(g)
	}
}
