package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Chain is the filter chain the router runs on each event before delivery
// (filters.Chain). It returns the event to deliver, nil when a filter
// dropped it, or an error when a filter asks for it to be dead-lettered.
type Chain interface {
	Run(ctx context.Context, ev *Event) (*Event, error)
}

// filterNamed is implemented by chain errors that name the filter.
type filterNamed interface{ FilterName() string }

// Route is one processor as the router sees it: its name (the processor
// entry's name, the key of its checkpoint position), its dispatcher, and
// the streams it takes.
type Route struct {
	Name       string
	Dispatcher *Dispatcher
	// Streams names the streams the processor takes; empty takes every
	// stream.
	Streams []string
}

// Takes reports whether the route takes events of the named stream.
func (r Route) Takes(stream string) bool {
	return len(r.Streams) == 0 || slices.Contains(r.Streams, stream)
}

// Resume is where a stream starts after a restart: after Position, the
// minimum of its processors' positions, and, per processor name, the
// position up to which that processor had already finished (a processor
// absent here is at Position).
type Resume struct {
	Position   Position
	Processors map[string]Position
}

// RouterOptions configures a Router.
type RouterOptions struct {
	// Stream is the name of the stream the router handles (Event.Stream of
	// its events).
	Stream string
	Chain  Chain
	// Routes are the processors; the router keeps those taking Stream, in
	// this order. The routes' Dispatchers are shared by the routers of
	// every stream.
	Routes []Route
	Log    *slog.Logger
	// Resume answers the stream's question where to start (the stream's
	// checkpoint.Keeper); nil starts from "now" (no checkpoints).
	Resume func(instanceUUID, source string, now time.Time) (Resume, bool)
	// DetachAfter is how long a queue must stay full before its processor
	// detaches (DefaultDetachAfter); see Run.
	DetachAfter time.Duration
	// ReplayWindow, when set, is how old an event a catch-up reader may
	// still deliver (the state's replay_window): older ones are recorded
	// as done without delivery, as a restart past the window skips them.
	ReplayWindow time.Duration
}

// Router joins one stream to its processors through the filter chain: it
// is the stream's StreamHandler. Several streams have one Router each,
// sharing the chain and the processors' dispatchers.
//
// The chain runs once per event. Its output goes to every processor taking
// the stream: submitted to its dispatcher, which queues it for the
// processor's destinations or, when it names none, records it as done, so
// that processor's position moves past it. A filter's drop or dead letter
// (written once) is done for every processor.
type Router struct {
	stream       string
	chain        Chain
	log          *slog.Logger
	resume       func(instanceUUID, source string, now time.Time) (Resume, bool)
	routes       []*route // those taking the stream
	detachAfter  time.Duration
	replayWindow time.Duration
	// last is the newest position the live stream handed on (or the
	// instant it started from): where a processor detaching now stays.
	// Only the live stream's goroutine uses it.
	last Position
	// iso is set by Run when processors may detach; nil holds the
	// stream on a full queue.
	iso *isolation
}

// route is one processor's state on one stream.
type route struct {
	Route
	// skip is the position up to which the processor has its events
	// already: finished before a restart, or handed on by the catch-up
	// reader it rejoined from. Events at or before it are recorded as done
	// for it without delivery. nil when there is none.
	skip atomic.Pointer[Position]

	// detached is set while the processor is detached from the live
	// stream (isolation.go). Only the live stream sets it and only the
	// catch-up reader clears it, under mu; the live stream reads it
	// without mu first, on its hot path.
	detached atomic.Bool
	mu       sync.Mutex
	since    time.Time     // when it detached
	seen     Position      // the newest position the live stream read while detached
	behind   int           // events the live stream read while detached
	reader   chan struct{} // closed when the last catch-up reader has ended
}

var _ StreamHandler = (*Router)(nil)

// NewRouter returns the router of the stream o.Stream.
func NewRouter(o RouterOptions) *Router {
	r := &Router{stream: o.Stream, chain: o.Chain, log: o.Log, resume: o.Resume, detachAfter: o.DetachAfter,
		replayWindow: o.ReplayWindow}
	if r.detachAfter <= 0 {
		r.detachAfter = DefaultDetachAfter
	}
	for _, rt := range o.Routes {
		if rt.Takes(o.Stream) {
			r.routes = append(r.routes, &route{Route: rt})
		}
	}
	return r
}

// Resume implements StreamHandler: it returns the stream's position and
// makes each processor skip what it had already finished.
func (r *Router) Resume(instanceUUID, source string, now time.Time) (Position, bool) {
	// Without a position the stream starts at the instant now: a
	// processor detaching before the first event catches up from there.
	r.last = Position{Time: now, Key: math.MinInt32}
	if r.resume == nil {
		return Position{}, false
	}
	res, ok := r.resume(instanceUUID, source, now)
	if ok {
		r.last = res.Position
	}
	for _, rt := range r.routes {
		rt.skip.Store(nil)
		if p, has := res.Processors[rt.Name]; ok && has && res.Position.Before(p) {
			rt.skip.Store(&p)
			r.log.Info("processor resumes ahead of its stream: it skips the events it had finished",
				"stream", r.stream, "processor", rt.Name, "created_time", p.Time, "key", p.Key)
		}
	}
	return res.Position, ok
}

// skips reports whether the processor has the event at pos already.
func (rt *route) skips(pos Position) bool {
	p := rt.skip.Load()
	return p != nil && !p.Before(pos)
}

// deadLetter writes a letter once, through the first processor's
// dispatcher (every dispatcher of a daemon shares its sink).
func (r *Router) deadLetter(ctx context.Context, dl DeadLetter) error {
	return r.routes[0].Dispatcher.DeadLetter(ctx, dl)
}

// Undecodable implements StreamHandler: the raw event becomes a dead letter
// with origin "stream", and its position is acknowledged for every
// processor. Both wait while the sink or a watermark ledger is full.
func (r *Router) Undecodable(ctx context.Context, u Undecodable) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(r.routes) == 0 {
		return nil // no processor takes the stream: nothing to keep
	}
	msg := ""
	if u.Err != nil {
		msg = u.Err.Error()
	}
	r.log.Error("undecodable event dead-lettered; the stream moves on", "key", u.Position.Key,
		"created_time", u.Position.Time, "err", u.Err)
	if err := r.deadLetter(ctx, DeadLetter{Origin: OriginStream, Raw: u.Raw, Position: u.Position,
		Reason: "undecodable", Error: msg, Attempts: 1}); err != nil {
		return err
	}
	if u.Position.Time.IsZero() {
		// Its key and time were unreadable: there is no position to
		// acknowledge, and a zero one would pull the watermark to 1970.
		return nil
	}
	return r.handAll(ctx, u.Position, nil)
}

// handAll hands the event at pos to every processor taking the stream:
// out submitted, or recorded as done when out is nil; then pos is the
// stream's newest.
func (r *Router) handAll(ctx context.Context, pos Position, out *Event) error {
	for _, rt := range r.routes {
		if err := r.hand(ctx, rt, pos, out); err != nil {
			return err
		}
	}
	if r.last.Before(pos) {
		// The newest, not the latest: a late event handed on after
		// newer ones must not move a detaching processor's catch-up
		// back over events it has already.
		r.last = pos
	}
	return nil
}

// hand gives the live stream's event at pos to rt: submitted, or done
// when out is nil or rt has it already. It blocks while rt's queue or
// ledger is full, unless processors may detach (Run): then it waits at
// most detachAfter and detaches rt. A detached rt gets nothing.
func (r *Router) hand(ctx context.Context, rt *route, pos Position, out *Event) error {
	if !rt.live(pos) {
		return nil
	}
	if rt.skips(pos) {
		out = nil
	}
	if r.iso == nil {
		if out == nil {
			return rt.Dispatcher.DoneAt(ctx, r.stream, pos)
		}
		return rt.Dispatcher.Submit(ctx, out)
	}
	var ok bool
	var err error
	if out == nil {
		ok, err = rt.Dispatcher.tryDoneAt(ctx, r.stream, pos, r.detachAfter)
	} else {
		ok, err = rt.Dispatcher.TrySubmit(ctx, out, r.detachAfter)
	}
	if err != nil || ok {
		return err
	}
	r.detach(rt, pos)
	return nil
}

// Handle implements StreamHandler: filter once, then queue for every
// processor taking the stream. It blocks while a processor's queues, a
// watermark ledger or the dead-letter sink are full (under Run, a
// processor whose queue stays full detaches instead). An event whose
// handling ctx cut short is not acknowledged (for the processors it had
// not reached yet).
func (r *Router) Handle(ctx context.Context, ev *Event) error {
	if len(r.routes) == 0 {
		return nil // no processor takes the stream
	}
	if ev.Stream == "" {
		ev.Stream = r.stream
	}
	out, err := r.chain.Run(ctx, ev)
	if ctx.Err() != nil {
		// Shutting down mid-chain: the event is not acknowledged, so a
		// checkpointed router reads it again at its next start.
		return ctx.Err()
	}
	debug := r.log.Enabled(ctx, slog.LevelDebug)
	switch {
	case err != nil:
		filter := ""
		var fn filterNamed
		if errors.As(err, &fn) {
			filter = fn.FilterName()
		}
		r.log.Warn("filter failed; event dead-lettered", "key", ev.Key, "subject", ev.Subject, "filter", filter, "err", err)
		if err := r.deadLetter(ctx, DeadLetter{Event: ev, Origin: OriginFilter, Filter: filter,
			Reason: "filter_error", Error: err.Error(), Attempts: 1}); err != nil {
			return err
		}
		if err := r.handAll(ctx, ev.Position(), nil); err != nil {
			return err
		}
		if debug {
			r.log.LogAttrs(ctx, slog.LevelDebug, "event handled", slog.Int("key", int(ev.Key)),
				slog.String("subject", ev.Subject), slog.String("verdict", "dead_letter"))
		}
		return nil
	case out == nil:
		if err := r.handAll(ctx, ev.Position(), nil); err != nil {
			return err
		}
		if debug {
			r.log.LogAttrs(ctx, slog.LevelDebug, "event handled", slog.Int("key", int(ev.Key)),
				slog.String("subject", ev.Subject), slog.String("verdict", "drop"))
		}
		return nil
	}
	if debug {
		verdict := "pass"
		if out != ev {
			verdict = "replace"
		}
		r.log.LogAttrs(ctx, slog.LevelDebug, "event handled", slog.Int("key", int(ev.Key)),
			slog.String("subject", out.Subject), slog.String("verdict", verdict))
	}
	// A filter's replacement keeps the stream (ParseReplacement); a chain
	// that builds its own event may not.
	if out.Stream == "" {
		out.Stream = ev.Stream
	}
	return r.handAll(ctx, ev.Position(), out)
}
