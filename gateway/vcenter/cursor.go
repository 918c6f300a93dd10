package vcenter

import (
	"math"
	"slices"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// cursor is the stream's place in a vCenter's history: the last event it
// handed on (or the instant it started from) and which events count as
// already handed.
//
// vCenter orders events by CreatedTime, then Key. Keys alone cannot be
// trusted (int32: they wrap negative, and restart at 1 after a restore or
// in a fresh vCenter), so an event is new when it is later than pos, or at
// pos's exact time and not one of the keys already handed at that time.
// Keeping the set of keys of the last timestamp, not just the last key,
// makes equal CreatedTimes safe even when their keys are not ascending.
type cursor struct {
	pos gateway.Position

	// atEvent says pos is an event vCenter held (handed on, or the
	// position Resume returned), not the instant the stream started from.
	// Only then can its absence from the history show pruning, and only
	// then can a successor be recognised by its key.
	atEvent bool

	// seen holds the keys handed on at pos.Time.
	seen []int32

	// exact is false right after a Resume, when seen is not known: then
	// the events at pos.Time with a key up to floor count as handed.
	exact bool
	floor int32

	// Late events: vCenter can make an event visible after events created
	// later (its CreatedTime is before pos when it shows). The cursor
	// remembers what it handed on in the last window before pos.Time, so
	// such an event is recognised as not handed on yet, from known on (the
	// instant from which the cursor has seen everything handed on in this
	// run: its start, or just after the resume position).
	window time.Duration
	known  time.Time
	recent []gateway.Position // handed on, in the order handed
	handed map[identity]bool  // recent, as a set
}

// identity is an event's (CreatedTime, key), usable as a map key.
type identity struct {
	nanos int64
	key   int32
}

func identityOf(e *types.Event) identity {
	return identity{e.CreatedTime.UnixNano(), e.Key}
}

// startAt returns a cursor for a stream starting at instant now (vCenter's
// clock): every event created at or after now is new.
func startAt(now time.Time) *cursor {
	return &cursor{pos: gateway.Position{Time: now}, exact: true, known: now}
}

// resumeAfter returns a cursor for a stream resuming after pos. A position
// with key math.MinInt32 is a starting instant (the checkpoint keeper's
// "no checkpoint yet" or "replay window exceeded"), not an event vCenter
// held: every event created at or after its time is new, and nothing can be
// missing before it (keys measured from math.MinInt32 would report some
// 2^31 missed events).
func resumeAfter(pos gateway.Position) *cursor {
	known := pos.Time.Add(time.Nanosecond)
	if pos.Key == math.MinInt32 {
		known = pos.Time
	}
	return &cursor{pos: pos, atEvent: pos.Key != math.MinInt32, floor: pos.Key, known: known}
}

// late reports whether e, not new, is a late event: created in the window
// before pos, after known, and not handed on.
func (c *cursor) late(e *types.Event) bool {
	t := e.CreatedTime
	if !t.Before(c.pos.Time) || t.Before(c.known) || t.Before(c.pos.Time.Add(-c.window)) {
		return false
	}
	return !c.handed[identityOf(e)]
}

// isNew reports whether e has not been handed on yet.
func (c *cursor) isNew(e *types.Event) bool {
	t := e.CreatedTime
	if !t.Equal(c.pos.Time) {
		return t.After(c.pos.Time)
	}
	if slices.Contains(c.seen, e.Key) {
		return false
	}
	return c.exact || e.Key > c.floor
}

// follows reports whether e is, by its key, the event right after pos in
// the history: the next key (int32 wraps in Go as in vCenter) no earlier
// than pos. A latest page holding only e then proves nothing was skipped.
func (c *cursor) follows(e *types.Event) bool {
	return c.atEvent && e.Key == c.pos.Key+1 && !e.CreatedTime.Before(c.pos.Time)
}

// advance records e as handed on. A late event (before pos) leaves pos
// where it is.
func (c *cursor) advance(e *types.Event) {
	t := e.CreatedTime
	c.remember(e)
	if t.Before(c.pos.Time) {
		return
	}
	if !t.Equal(c.pos.Time) {
		c.pos.Time = t
		c.seen = c.seen[:0]
		c.exact = true
	}
	c.pos.Key = e.Key
	c.seen = append(c.seen, e.Key)
	c.atEvent = true
}

// remember records e in the window of events handed on, and forgets those
// that fell out of it (in the order handed: a late one is forgotten with
// the events handed before it).
func (c *cursor) remember(e *types.Event) {
	if c.window <= 0 {
		return
	}
	if c.handed == nil {
		c.handed = map[identity]bool{}
	}
	id := identityOf(e)
	c.handed[id] = true
	c.recent = append(c.recent, gateway.Position{Time: e.CreatedTime, Key: e.Key})
	edge := c.pos.Time.Add(-c.window)
	if e.CreatedTime.After(c.pos.Time) {
		edge = e.CreatedTime.Add(-c.window)
	}
	n := 0
	for n < len(c.recent) && c.recent[n].Time.Before(edge) {
		delete(c.handed, identity{c.recent[n].Time.UnixNano(), c.recent[n].Key})
		n++
	}
	c.recent = c.recent[n:]
}

// sortEvents puts events in vCenter's order: CreatedTime, then Key.
func sortEvents(evs []types.BaseEvent) {
	slices.SortStableFunc(evs, func(a, b types.BaseEvent) int {
		x, y := a.GetEvent(), b.GetEvent()
		if c := x.CreatedTime.Compare(y.CreatedTime); c != 0 {
			return c
		}
		switch {
		case x.Key < y.Key:
			return -1
		case x.Key > y.Key:
			return 1
		}
		return 0
	})
}
