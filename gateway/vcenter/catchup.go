package vcenter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// ErrInstanceChanged is CatchUp's error when, after a reconnect, another
// vCenter instance (a new instance UUID) answers at the stream's address:
// the position being caught up from belongs to the history of the one
// before.
var ErrInstanceChanged = errors.New("another vCenter instance answers at the address")

// CatchUp reads vCenter's event history strictly after from, in order, and
// hands each event to h.Handle (an undecodable one to h.Undecodable), as
// the live stream does, for a processor that fell behind the live stream
// (DESIGN.md, "Second round"). h.Resume is not called. A from with key
// math.MinInt32 is an instant: every event created at or after its time is
// handed on.
//
// Each time it has read everything vCenter holds so far, it calls
// caughtUp with the position of the last event handed on (from, while
// none was); when that returns true, it destroys its collector, logs out
// and returns nil. Otherwise it reads again, after a short pause when
// nothing new came. Handle may block: the reader waits (backpressure).
//
// It reads with a session and an event history collector of its own, so
// the live stream's session, collectors and latency are untouched, its
// faults do not end the live stream's session, and a catch-up counts
// against vCenter's 32 collectors per session on its own session. On a
// transient fault it logs in again and goes on after the last event handed
// on, with the live stream's backoff. Events vCenter pruned before they
// could be read are logged and counted as missed, as the live stream does;
// the stream's other counters are the live stream's alone.
//
// It returns ctx.Err() once ctx is done (its teardown then runs in the
// background; Close waits for it), and ErrInstanceChanged (wrapped) when a
// reconnect finds another vCenter instance. Call it while the stream is
// open (before Close); several may run at once.
func (s *Stream) CatchUp(ctx context.Context, from gateway.Position, h gateway.StreamHandler, caughtUp func(last gateway.Position) bool) error {
	cur := resumeAfter(from)
	cur.window = s.tun.late
	c := &catchUp{
		s:        s,
		log:      s.log.With("reader", "catch-up"),
		cur:      cur,
		h:        h,
		caughtUp: caughtUp,
	}
	c.log.Info("catching up from vCenter's history", "after_time", from.Time, "after_key", from.Key)
	delay := s.tun.backoffMin
	for {
		start := time.Now()
		done, read, err := c.session(ctx)
		switch {
		case done:
			c.log.Info("caught up", "last_time", cur.pos.Time, "last_key", cur.pos.Key, "handed_on", c.handed)
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrInstanceChanged):
			return fmt.Errorf("catching up from %s: %w", s.source, err)
		}
		if read && time.Since(start) >= s.tun.stable {
			delay = s.tun.backoffMin
		}
		wait := delay/2 + rand.N(delay/2+1)
		c.log.Warn("catch-up interrupted; reconnecting", "address", s.source, "err", err,
			"last_key", cur.pos.Key, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		delay = min(delay*2, s.tun.backoffMax)
	}
}

// catchUp is one CatchUp's state across its sessions.
type catchUp struct {
	s        *Stream
	log      *slog.Logger
	cur      *cursor
	h        gateway.StreamHandler
	caughtUp func(last gateway.Position) bool

	uuid       string // the instance UUID of the first session
	unreadable map[[32]byte]bool
	handed     int
}

// session is one connection of a catch-up: log in, read until caught up
// or a fault, tear down. read says whether a read succeeded.
func (c *catchUp) session(ctx context.Context) (done, read bool, err error) {
	s := c.s
	cn, err := s.connect(ctx)
	if err != nil {
		return false, false, err
	}
	defer func() {
		if done {
			// Caught up: the collector is gone when CatchUp returns.
			cn.close(s.tun.cleanup)
			return
		}
		// A fault or ctx: the teardown runs beside the next login, or
		// after CatchUp returned, as Close's to wait for.
		s.cleanups.Add(1)
		go func() {
			defer s.cleanups.Done()
			cn.close(s.tun.cleanup)
		}()
	}()
	switch {
	case c.uuid == "":
		c.uuid = cn.uuid
	case cn.uuid != c.uuid:
		return false, false, fmt.Errorf("%w (instance UUID %s, was %s)", ErrInstanceChanged, cn.uuid, c.uuid)
	}

	f := &follower{s: s, log: c.log, cn: cn, cur: c.cur, h: c.h, catchUp: true, unreadable: &c.unreadable}
	defer func() { c.handed += f.handed }()
	for {
		before := f.handed
		if err := f.read(ctx); err != nil {
			return false, read, err
		}
		read = true
		if c.caughtUp(c.cur.pos) {
			return true, true, nil
		}
		if f.handed > before {
			continue
		}
		// Nothing new. The next read takes a fresh collector: the
		// simulator's collector holds about 1,000 events, and one whose
		// read position fell out of it (a reader that lagged that far
		// behind while Handle blocked) returns nothing ever after.
		f.staleReader()
		select {
		case <-ctx.Done():
			return false, true, ctx.Err()
		case <-time.After(s.tun.catchUpPoll):
		}
	}
}
