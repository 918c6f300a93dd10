package gateway

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CatchUpper is a Stream that can read its source's history again, for one
// processor that fell behind the live stream (vcenter.Stream.CatchUp):
// every event after from, in order, to h, calling caughtUp with the last
// position handed on each time it has read everything the source holds,
// until that returns true (then it returns nil) or ctx is done (ctx's
// error). Any other error means the history it read is gone (another
// vCenter instance answers at the address).
type CatchUpper interface {
	CatchUp(ctx context.Context, from Position, h StreamHandler, caughtUp func(last Position) bool) error
}

// DefaultDetachAfter is how long a processor's queue must stay full before
// it detaches. A delivery takes milliseconds to a few hundred; a queue that
// frees no slot for a whole second is not draining at the stream's pace,
// while a burst is absorbed well within it. It is also the longest the
// other processors wait for the one detaching.
const DefaultDetachAfter = time.Second

// catchUpRetry is the pause before a catch-up whose history went away
// starts again.
const catchUpRetry = time.Second

// isolation is what Run sets up so that processors may detach.
type isolation struct {
	ctx     context.Context // the stream's: catch-up readers stop with it
	stream  CatchUpper
	readers sync.WaitGroup
}

// Run follows s with the router as its handler until ctx is done (s.Run),
// and returns s.Run's result once the router's catch-up readers have
// stopped too.
//
// With one processor taking the stream, a full queue holds the stream,
// as s.Run alone does. With several, and a stream that can read its
// history again (CatchUpper), a processor whose queue or watermark ledger
// stays full for DetachAfter detaches instead: the live stream reads on
// for the others and hands it nothing, its position (and so the stream's
// checkpoint) stays where it detached, and a catch-up reader of its own
// reads the history from there, runs the chain again for it alone (the
// live stream wrote the dead letters already) and submits to it with
// backpressure, up to ReplayWindow old. When the reader has reached the newest event the live
// stream read, the processor rejoins the live stream, which hands it every
// event after the reader's last. A stream that cannot read its history
// again holds every processor on a full queue, as before.
func (r *Router) Run(ctx context.Context, s Stream) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cu, ok := s.(CatchUpper); ok && len(r.routes) > 1 {
		r.iso = &isolation{ctx: ctx, stream: cu}
		for _, rt := range r.routes {
			r.detachedGauge(rt).Set(0)
		}
	}
	err := s.Run(ctx, r)
	cancel()
	if r.iso != nil {
		r.iso.readers.Wait()
	}
	return err
}

// detachedGauge is rt's eventrouter_processor_detached series.
func (r *Router) detachedGauge(rt *route) prometheus.Gauge {
	return rt.Dispatcher.o.Metrics.ProcessorDetached.WithLabelValues(rt.Name, r.stream)
}

// live reports whether the live stream hands the event at pos to rt. While
// rt is detached it does not: the event is its catch-up reader's, and pos
// is noted as read.
func (rt *route) live(pos Position) bool {
	if !rt.detached.Load() {
		return true // only the live stream's goroutine detaches
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if !rt.detached.Load() {
		return true // it rejoined just now
	}
	if rt.seen.Before(pos) {
		rt.seen = pos
	}
	rt.behind++
	return false
}

// detach detaches rt, whose queue stayed full for the event at pos, and
// starts its catch-up reader from the newest position handed to it.
func (r *Router) detach(rt *route, pos Position) {
	at := r.last
	done := make(chan struct{})
	rt.mu.Lock()
	rt.since, rt.seen, rt.behind = time.Now(), pos, 1
	prev := rt.reader
	rt.reader = done
	rt.detached.Store(true)
	r.detachedGauge(rt).Set(1)
	rt.mu.Unlock()
	r.log.Warn("processor detached from the stream: its queue stayed full; the stream goes on for the others, and it catches up from vCenter's history",
		"stream", r.stream, "processor", rt.Name, "full_for", r.detachAfter.String(),
		"position_key", at.Key, "position_time", at.Time, "refused_key", pos.Key)
	r.iso.readers.Add(1)
	go func() {
		defer r.iso.readers.Done()
		defer close(done)
		// One catch-up per processor and stream at a time: the previous
		// reader may still be logging out.
		if prev != nil {
			select {
			case <-prev:
			case <-r.iso.ctx.Done():
				return
			}
		}
		r.catchUp(rt, at)
	}()
}

// catchUp runs rt's catch-up reader from the position from until rt
// rejoins the live stream or the stream stops.
func (r *Router) catchUp(rt *route, from Position) {
	ctx := r.iso.ctx
	h := &catchUpHandler{r: r, rt: rt, last: from}
	rt.mu.Lock()
	live := rt.seen
	rt.mu.Unlock()
	r.log.Info("processor catching up from vCenter's history", "stream", r.stream, "processor", rt.Name,
		"from_key", from.Key, "from_time", from.Time, "live_key", live.Key, "live_time", live.Time)
	for {
		err := r.iso.stream.CatchUp(ctx, from, h, h.rejoin)
		if err == nil {
			r.log.Info("processor caught up and rejoined the stream", "stream", r.stream, "processor", rt.Name,
				"caught_up", h.handed, "beyond_replay_window", h.beyond, "read_live_while_detached", h.behind,
				"detached_for", time.Since(h.since).Round(time.Millisecond).String(),
				"position_key", h.last.Key, "position_time", h.last.Time)
			return
		}
		if ctx.Err() != nil {
			return
		}
		// The history it read is gone (another vCenter instance answers
		// at the address): go on in the history there is now, from the
		// time of the last event handed on, as a restart would.
		from = Position{Time: h.last.Time, Key: math.MinInt32}
		r.log.Error("catch-up ended; starting again from the time of the last event handed on", "stream", r.stream,
			"processor", rt.Name, "from_time", from.Time, "retry_in", catchUpRetry.String(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(catchUpRetry):
		}
	}
}

// catchUpHandler is a catch-up reader's StreamHandler: the events go to
// one processor only, with backpressure.
type catchUpHandler struct {
	r  *Router
	rt *route

	last   Position // the newest position handed on
	handed int      // events handed on
	beyond int      // of which older than the replay window, not delivered
	// set by rejoin: how long rt was detached and how many events the
	// live stream read meanwhile
	since  time.Time
	behind int
}

var _ StreamHandler = (*catchUpHandler)(nil)

// Resume is not called by a catch-up.
func (h *catchUpHandler) Resume(string, string, time.Time) (Position, bool) { return Position{}, false }

// Handle runs the chain again for the event and submits its output to the
// processor, waiting while its queue is full. A filter's drop or dead
// letter is done for it: the live stream wrote the letter already.
func (h *catchUpHandler) Handle(ctx context.Context, ev *Event) error {
	if ev.Stream == "" {
		ev.Stream = h.r.stream
	}
	pos := ev.Position()
	if w := h.r.replayWindow; w > 0 && time.Since(ev.Time) > w {
		if h.beyond == 0 {
			h.r.log.Warn("catch-up: events older than replay_window are not delivered", "stream", h.r.stream,
				"processor", h.rt.Name, "replay_window", w.String(), "key", ev.Key, "created_time", ev.Time)
		}
		h.beyond++
		return h.take(ctx, pos, nil)
	}
	var out *Event
	if !h.rt.skips(pos) {
		var err error
		out, err = h.r.chain.Run(ctx, ev)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			out = nil
		} else if out != nil && out.Stream == "" {
			out.Stream = ev.Stream
		}
	}
	return h.take(ctx, pos, out)
}

// Undecodable records the event's position as done for the processor; the
// live stream dead-lettered it already.
func (h *catchUpHandler) Undecodable(ctx context.Context, u Undecodable) error {
	if u.Position.Time.IsZero() {
		return nil // no position to record, as for the live stream
	}
	return h.take(ctx, u.Position, nil)
}

func (h *catchUpHandler) take(ctx context.Context, pos Position, out *Event) error {
	var err error
	if out == nil {
		err = h.rt.Dispatcher.DoneAt(ctx, h.r.stream, pos)
	} else {
		err = h.rt.Dispatcher.Submit(ctx, out)
	}
	if err != nil {
		return err
	}
	h.handed++
	if h.last.Before(pos) {
		h.last = pos
	}
	return nil
}

// rejoin is the reader's caughtUp: once it has handed on up to last, at or
// past the newest event the live stream read, the processor rejoins the
// live stream, which from then on hands it every event after last (those
// at or before it are the reader's). Taking rt.mu, as the live stream's
// live does, makes the switch atomic: each event is either the reader's
// or the live stream's, never both or neither.
func (h *catchUpHandler) rejoin(last Position) bool {
	rt := h.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if last.Before(rt.seen) {
		return false
	}
	rt.skip.Store(&last)
	rt.detached.Store(false)
	h.r.detachedGauge(rt).Set(0)
	h.since, h.behind = rt.since, rt.behind
	return true
}

// Degraded returns /readyz's degraded lines of the router, without the
// "degraded: " prefix: each processor detached from the stream.
func (r *Router) Degraded() []string {
	var lines []string
	for _, rt := range r.routes {
		if !rt.detached.Load() {
			continue
		}
		rt.mu.Lock()
		since := rt.since
		rt.mu.Unlock()
		lines = append(lines, fmt.Sprintf("processor %s: detached from stream %s since %s, catching up",
			rt.Name, r.stream, since.UTC().Format(time.RFC3339)))
	}
	return lines
}
