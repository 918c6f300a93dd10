package vcenter

import (
	"math"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

func ev(at time.Time, key int32) *types.Event { return &types.Event{CreatedTime: at, Key: key} }

func TestCursor(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Millisecond)
	tests := []struct {
		name    string
		cur     func() *cursor
		handed  []*types.Event // advanced over first
		check   *types.Event
		isNew   bool
		follows bool
	}{
		{"start: an event at the start instant is new", func() *cursor { return startAt(t0) }, nil, ev(t0, 5), true, false},
		{"start: an earlier event is old", func() *cursor { return startAt(t0) }, nil, ev(t0.Add(-1), 5), false, false},
		{"start: nothing follows a start instant by key", func() *cursor { return startAt(t0) }, nil, ev(t1, 1), true, false},
		{"resume: the position itself is old", func() *cursor { return resumeAfter(gateway.Position{Time: t0, Key: 7}) }, nil, ev(t0, 7), false, false},
		{"resume: a lower key at the same time is old", func() *cursor { return resumeAfter(gateway.Position{Time: t0, Key: 7}) }, nil, ev(t0, 6), false, false},
		{"resume: a higher key at the same time is new", func() *cursor { return resumeAfter(gateway.Position{Time: t0, Key: 7}) }, nil, ev(t0, 8), true, true},
		{"resume: a later time is new whatever its key", func() *cursor { return resumeAfter(gateway.Position{Time: t0, Key: 7}) }, nil, ev(t1, 1), true, false},
		{"resume at an instant: an event at its time is new", func() *cursor { return resumeAfter(gateway.Position{Time: t0, Key: math.MinInt32}) }, nil, ev(t0, math.MinInt32+1), true, false},
		{"resume at an instant: an earlier event is old", func() *cursor { return resumeAfter(gateway.Position{Time: t0, Key: math.MinInt32}) }, nil, ev(t0.Add(-1), 5), false, false},
		{"handed: same time, key seen", func() *cursor { return startAt(t0) }, []*types.Event{ev(t0, 9), ev(t0, 3)}, ev(t0, 9), false, false},
		{"handed: same time, lower unseen key is new (keys restarted)", func() *cursor { return startAt(t0) }, []*types.Event{ev(t0, 9)}, ev(t0, 2), true, false},
		{"handed: the next key follows", func() *cursor { return startAt(t0) }, []*types.Event{ev(t0, 9)}, ev(t1, 10), true, true},
		{"handed: a key gap does not follow", func() *cursor { return startAt(t0) }, []*types.Event{ev(t0, 9)}, ev(t1, 11), true, false},
		{"handed: the next key earlier in time does not follow", func() *cursor { return startAt(t1) }, []*types.Event{ev(t1, 9)}, ev(t0, 10), false, false},
		{"handed: key wraps to negative", func() *cursor { return startAt(t0) }, []*types.Event{ev(t0, math.MaxInt32)}, ev(t1, math.MinInt32), true, true},
		{"handed: a new time resets the seen keys", func() *cursor { return startAt(t0) }, []*types.Event{ev(t0, 9), ev(t1, 1)}, ev(t1, 9), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cur()
			for _, e := range tt.handed {
				c.advance(e)
			}
			if got := c.isNew(tt.check); got != tt.isNew {
				t.Errorf("isNew = %v, want %v", got, tt.isNew)
			}
			if got := c.follows(tt.check); got != tt.follows {
				t.Errorf("follows = %v, want %v", got, tt.follows)
			}
		})
	}
}

func TestSortEvents(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(at time.Time, key int32) types.BaseEvent {
		return &types.GeneralUserEvent{GeneralEvent: types.GeneralEvent{Event: types.Event{CreatedTime: at, Key: key}}}
	}
	evs := []types.BaseEvent{mk(t0.Add(2), 1), mk(t0, 5), mk(t0, 3), mk(t0.Add(1), 9)}
	sortEvents(evs)
	want := []int32{3, 5, 9, 1}
	for i, e := range evs {
		if e.GetEvent().Key != want[i] {
			t.Fatalf("order %d: key %d, want %v", i, e.GetEvent().Key, want)
		}
	}
}

func TestCursorLate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	started := func() *cursor { c := startAt(t0); c.window = 5 * time.Second; return c }
	tests := []struct {
		name   string
		cur    func() *cursor
		handed []*types.Event
		check  *types.Event
		late   bool
	}{
		{"an unseen event before the last one, in the window", started, []*types.Event{ev(at(3*time.Second), 1), ev(at(4*time.Second), 2)}, ev(at(3500*time.Millisecond), 9), true},
		{"an event handed on is not late", started, []*types.Event{ev(at(3*time.Second), 1), ev(at(4*time.Second), 2)}, ev(at(3*time.Second), 1), false},
		{"a late event handed on is not late again", started, []*types.Event{ev(at(3*time.Second), 1), ev(at(4*time.Second), 2), ev(at(3500*time.Millisecond), 9)}, ev(at(3500*time.Millisecond), 9), false},
		{"before the stream started", started, []*types.Event{ev(at(time.Second), 1)}, ev(at(-time.Millisecond), 9), false},
		{"before the window", started, []*types.Event{ev(at(time.Second), 1), ev(at(20*time.Second), 2)}, ev(at(10*time.Second), 9), false},
		{"a new event is not late", started, []*types.Event{ev(at(time.Second), 1)}, ev(at(2*time.Second), 2), false},
		{"at or before a resume position", func() *cursor {
			c := resumeAfter(gateway.Position{Time: t0, Key: 7})
			c.window = 5 * time.Second
			return c
		}, nil, ev(at(-time.Second), 3), false},
		{"without a window", func() *cursor { return startAt(t0) }, []*types.Event{ev(at(3*time.Second), 1)}, ev(at(2*time.Second), 9), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cur()
			for _, e := range tt.handed {
				c.advance(e)
			}
			if got := c.late(tt.check); got != tt.late {
				t.Errorf("late = %v, want %v", got, tt.late)
			}
			if c.isNew(tt.check) && tt.late {
				t.Errorf("a late event counts as new")
			}
		})
	}
	t.Run("a late event leaves the cursor where it is", func(t *testing.T) {
		c := started()
		c.advance(ev(at(4*time.Second), 2))
		c.advance(ev(at(3*time.Second), 9))
		if c.pos != (gateway.Position{Time: at(4 * time.Second), Key: 2}) {
			t.Errorf("pos %+v", c.pos)
		}
	})
	t.Run("the window forgets what fell out of it", func(t *testing.T) {
		c := started()
		for i := range 100 {
			c.advance(ev(at(time.Duration(i)*time.Second), int32(i)))
		}
		if n := len(c.handed); n > 6 {
			t.Errorf("%d events remembered, want those of the last 5 s", n)
		}
	})
}
