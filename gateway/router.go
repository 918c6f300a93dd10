package gateway

import (
	"context"
	"errors"
	"log/slog"
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

// Router joins a stream to the dispatcher through the filter chain. It is
// the StreamHandler of the daemon's stream.
type Router struct {
	chain  Chain
	disp   *Dispatcher
	log    *slog.Logger
	resume func(instanceUUID, source string, now time.Time) (Position, bool)
}

var _ StreamHandler = (*Router)(nil)

// NewRouter returns a router. resume may be nil (no checkpoints: start from
// "now").
func NewRouter(chain Chain, disp *Dispatcher, log *slog.Logger, resume func(instanceUUID, source string, now time.Time) (Position, bool)) *Router {
	return &Router{chain: chain, disp: disp, log: log, resume: resume}
}

// Resume implements StreamHandler.
func (r *Router) Resume(instanceUUID, source string, now time.Time) (Position, bool) {
	if r.resume == nil {
		return Position{}, false
	}
	return r.resume(instanceUUID, source, now)
}

// Undecodable implements StreamHandler: the raw event becomes a dead letter
// with origin "stream", and its position is acknowledged. Both wait while
// the sink or the watermark ledger is full.
func (r *Router) Undecodable(ctx context.Context, u Undecodable) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	msg := ""
	if u.Err != nil {
		msg = u.Err.Error()
	}
	r.log.Error("undecodable event dead-lettered; the stream moves on", "key", u.Position.Key,
		"created_time", u.Position.Time, "err", u.Err)
	if err := r.disp.DeadLetter(ctx, DeadLetter{Origin: OriginStream, Raw: u.Raw, Position: u.Position,
		Reason: "undecodable", Error: msg, Attempts: 1}); err != nil {
		return err
	}
	if u.Position.Time.IsZero() {
		// Its key and time were unreadable: there is no position to
		// acknowledge, and a zero one would pull the watermark to 1970.
		return nil
	}
	return r.disp.DoneAt(ctx, u.Position)
}

// Handle implements StreamHandler: filter, then queue for delivery. It
// blocks while the destinations' queues, the watermark ledger or the
// dead-letter sink are full. An event whose handling ctx cut short is not
// acknowledged.
func (r *Router) Handle(ctx context.Context, ev *Event) error {
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
		if err := r.disp.DeadLetter(ctx, DeadLetter{Event: ev, Origin: OriginFilter, Filter: filter,
			Reason: "filter_error", Error: err.Error(), Attempts: 1}); err != nil {
			return err
		}
		if err := r.disp.Done(ctx, ev); err != nil {
			return err
		}
		if debug {
			r.log.LogAttrs(ctx, slog.LevelDebug, "event handled", slog.Int("key", int(ev.Key)),
				slog.String("subject", ev.Subject), slog.String("verdict", "dead_letter"))
		}
		return nil
	case out == nil:
		if err := r.disp.Done(ctx, ev); err != nil {
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
	return r.disp.Submit(ctx, out)
}
