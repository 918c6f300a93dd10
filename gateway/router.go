package gateway

import (
	"context"
	"errors"
	"log/slog"
	"slices"
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
	stream string
	chain  Chain
	log    *slog.Logger
	resume func(instanceUUID, source string, now time.Time) (Resume, bool)
	routes []*route // those taking the stream
}

// route is one processor's state on one stream.
type route struct {
	Route
	// skip is the position up to which the processor had finished before
	// a restart: events at or before it are recorded as done for it
	// without delivery. nil when it resumed at the stream's position.
	skip atomic.Pointer[Position]

	// The next step (issue 13, isolation) adds here whether the processor
	// is attached to the live stream and, when it detached because its
	// queue was full (Dispatcher.TrySubmit reporting false), the position
	// where it did: the live stream then records the processor's events
	// as skipped past that position, and a catch-up reader of its own
	// reads vCenter's history from there until it reaches the live
	// stream, then rejoins. See NOTES / RATIONALE.
}

var _ StreamHandler = (*Router)(nil)

// NewRouter returns the router of the stream o.Stream.
func NewRouter(o RouterOptions) *Router {
	r := &Router{stream: o.Stream, chain: o.Chain, log: o.Log, resume: o.Resume}
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
	if r.resume == nil {
		return Position{}, false
	}
	res, ok := r.resume(instanceUUID, source, now)
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

// skips reports whether the processor had finished the event at pos
// before a restart.
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
	for _, rt := range r.routes {
		if err := rt.Dispatcher.DoneAt(ctx, r.stream, u.Position); err != nil {
			return err
		}
	}
	return nil
}

// doneAll records ev as needing no delivery for every processor.
func (r *Router) doneAll(ctx context.Context, ev *Event) error {
	for _, rt := range r.routes {
		if err := rt.Dispatcher.Done(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}

// Handle implements StreamHandler: filter once, then queue for every
// processor taking the stream. It blocks while a processor's queues, a
// watermark ledger or the dead-letter sink are full. An event whose
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
		if err := r.doneAll(ctx, ev); err != nil {
			return err
		}
		if debug {
			r.log.LogAttrs(ctx, slog.LevelDebug, "event handled", slog.Int("key", int(ev.Key)),
				slog.String("subject", ev.Subject), slog.String("verdict", "dead_letter"))
		}
		return nil
	case out == nil:
		if err := r.doneAll(ctx, ev); err != nil {
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
	pos := ev.Position()
	for _, rt := range r.routes {
		var err error
		if rt.skips(pos) {
			err = rt.Dispatcher.Done(ctx, ev)
		} else {
			err = rt.Dispatcher.Submit(ctx, out)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
