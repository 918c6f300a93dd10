package vcenter

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// readMargin is how far before the cursor's time a new collector's time
// filter begins. The events in the margin are read and skipped; the margin
// makes the filter's boundary immune to how vCenter rounds times, and lets
// the stream see the last event it handed on, which shows the history
// still holds it (see reportGap).
const readMargin = time.Millisecond

// maxWarnedTypes bounds the set of unknown event types warned about once.
const maxWarnedTypes = 100

// follower follows one session's collector.
type follower struct {
	s   *Stream
	log *slog.Logger
	cn  *session
	cur *cursor
	h   gateway.StreamHandler

	// catchUp marks a catch-up reader (catchup.go): it reads events the
	// live stream has read already, so it leaves the stream's event
	// counters alone (missed events excepted: those are lost to its
	// handler).
	catchUp bool
	// handed counts the events and dead letters handed on.
	handed int
	// unreadable holds the hashes of the undecodable events without a
	// readable position handed on (the stream's set for the live stream,
	// the reader's own for a catch-up).
	unreadable *map[[32]byte]bool

	// reader is a collector whose read position is right after the
	// cursor (zero when there is none): ReadNextEvents on it returns
	// exactly the events not handed on yet. A new collector reads from
	// the oldest event of its window (vCenter's default position), and
	// its window starts just before the cursor. The reader goes stale as
	// soon as an event is handed on from a latest page instead.
	reader      types.ManagedObjectReference
	readerFresh bool // reader has not been read yet: its window starts at the cursor
	caughtUp    bool // the session's first read is done

	warned map[string]bool // unknown event types already warned about

	capt    capture      // the raw body of the last wait or read
	waitReq waitTemplate // the wait's request
}

// start creates the session's collector and the property filter on its
// latest page. Reads use other collectors (see read): after
// SetCollectorPageSize, where this collector's read position stands is not
// documented.
func (f *follower) start(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, f.s.tun.call)
	defer cancel()
	c := f.cn.c
	// The latest page shows late events only inside the collector's
	// window: it starts a lateness window before the cursor.
	ref, err := f.cn.createCollector(cctx, f.cur.pos.Time.Add(-max(readMargin, f.cur.window)))
	if err != nil {
		return err
	}
	if _, err := methods.SetCollectorPageSize(cctx, c, &types.SetCollectorPageSize{This: ref, MaxCount: pageSize}); err != nil {
		return fmt.Errorf("setting the collector's page size: %w", err)
	}
	_, err = methods.CreateFilter(cctx, c, &types.CreateFilter{
		This: c.ServiceContent.PropertyCollector,
		Spec: types.PropertyFilterSpec{
			ObjectSet: []types.ObjectSpec{{Obj: ref}},
			PropSet:   []types.PropertySpec{{Type: ref.Type, PathSet: []string{"latestPage"}}},
		},
	})
	if err != nil {
		return fmt.Errorf("creating the property filter on the collector's latest page: %w", err)
	}
	return nil
}

// run waits for latest-page updates until an error or ctx is done.
// following is called once the first answer shows the session works.
func (f *follower) run(ctx context.Context, following func()) error {
	c := f.cn.c
	secs := int32(max(f.s.tun.waitMax/time.Second, 1))
	req := types.WaitForUpdatesEx{
		This:    c.ServiceContent.PropertyCollector,
		Options: &types.WaitOptions{MaxWaitSeconds: &secs},
	}
	first := true
	for {
		wctx, cancel := context.WithTimeout(ctx, f.s.tun.waitMax+f.s.tun.waitSlack)
		set, recovered, err := f.waitForUpdates(wctx, &req)
		cancel()
		if err != nil {
			return fmt.Errorf("waiting for new events: %w", err)
		}
		if first {
			// The first answer of a session is not trusted to join the
			// cursor: a latest page whose key happens to follow it may
			// come from a restored vCenter whose history holds other new
			// events before it. The history after the cursor is read
			// instead; the page then holds nothing new.
			first = false
			following()
			if err := f.read(ctx); err != nil {
				return err
			}
		}
		if set == nil {
			continue // MaxWaitSeconds passed without news
		}
		req.Version = set.Version
		if recovered {
			if err := f.read(ctx); err != nil {
				return err
			}
			continue
		}
		for _, fs := range set.FilterSet {
			for _, ou := range fs.ObjectSet {
				for _, ch := range ou.ChangeSet {
					if ch.Name != "latestPage" {
						continue
					}
					if err := f.onPage(ctx, ch.Val); err != nil {
						return err
					}
				}
			}
		}
	}
}

// onPage handles one value of the latest page. Its events are handed on as
// they are when the page proves nothing came between them and the cursor;
// otherwise the new events are read.
func (f *follower) onPage(ctx context.Context, val types.AnyType) error {
	var page []types.BaseEvent
	switch a := val.(type) {
	case arrayOfEvent:
		page = eventsOf(a.Event)
	case types.ArrayOfEvent: // a client without the stream's registry
		page = a.Event
	}
	// A page that is not full holds the collector's whole window.
	covered := len(page) < pageSize
	evs := f.decoded(page)
	sortEvents(evs)
	var fresh, late []types.BaseEvent
	for _, e := range evs {
		switch ev := e.GetEvent(); {
		case f.cur.isNew(ev):
			fresh = append(fresh, e)
		case f.cur.late(ev):
			late = append(late, e)
			covered = true
		default:
			// The page reaches back to what was handed on already.
			covered = true
		}
	}
	for _, e := range late {
		if err := f.hand(ctx, e); err != nil {
			return err
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if !covered && f.cur.follows(fresh[0].GetEvent()) {
		covered = true
	}
	if !covered {
		f.log.Debug("latest page does not join the last event handed on; reading",
			"last_key", f.cur.pos.Key, "page_key", fresh[0].GetEvent().Key)
		return f.read(ctx)
	}
	f.log.Debug("events from the latest page", "count", len(fresh))
	for _, e := range fresh {
		if err := f.hand(ctx, e); err != nil {
			return err
		}
	}
	f.staleReader()
	return nil
}

// staleReader drops the reader once events were handed on without it.
func (f *follower) staleReader() {
	if f.reader == (types.ManagedObjectReference{}) {
		return
	}
	f.cn.destroyLater(f.reader, f.s.tun.cleanup)
	f.reader = types.ManagedObjectReference{}
}

// read hands on every event after the cursor with ReadNextEvents, in pages.
func (f *follower) read(ctx context.Context) error {
	if f.reader == (types.ManagedObjectReference{}) {
		// The session's first read reaches a lateness window back, for
		// events that became visible late while the stream was away;
		// within a session, the latest page and a reader in step show
		// them, and a fresh reader's window need not pay for it.
		margin := readMargin
		if !f.caughtUp {
			margin = max(margin, f.cur.window)
		}
		cctx, cancel := context.WithTimeout(ctx, f.s.tun.call)
		ref, err := f.cn.createCollector(cctx, f.cur.pos.Time.Add(-margin))
		cancel()
		if err != nil {
			return err
		}
		f.reader, f.readerFresh = ref, true
	}
	checkGap := f.readerFresh && f.cur.atEvent
	f.readerFresh = false
	f.caughtUp = true
	sawPos := false
	for {
		rctx, cancel := context.WithTimeout(ctx, f.s.tun.call)
		page, err := f.readNext(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("reading events: %w", err)
		}
		evs := f.decoded(page)
		sortEvents(evs)
		handed := 0
		for _, e := range evs {
			if b, ok := e.(*badEvent); ok && !b.readable {
				if err := f.handBad(ctx, b); err != nil {
					return err
				}
				continue
			}
			ev := e.GetEvent()
			if !f.cur.isNew(ev) {
				if ev.CreatedTime.Equal(f.cur.pos.Time) {
					sawPos = true
				}
				if f.cur.late(ev) {
					if err := f.hand(ctx, e); err != nil {
						return err
					}
					handed++
				}
				continue
			}
			if checkGap {
				checkGap = false
				if !sawPos {
					f.reportGap(ev)
				}
			}
			if err := f.hand(ctx, e); err != nil {
				return err
			}
			handed++
		}
		f.log.Debug("read events", "read", len(page), "new", handed)
		if len(page) < int(f.s.tun.readBatch) {
			return nil
		}
	}
}

// reportGap is called when a fresh collector, whose window begins at the
// cursor, shows first an event after the cursor without the cursor's own
// event: vCenter no longer holds the event the stream resumes after. The
// keys between the two estimate what was lost (keys are not dense, so it is
// an estimate); keys that went back mean a restored or replaced vCenter,
// whose history starts anew, not lost events.
func (f *follower) reportGap(first *types.Event) {
	last := f.cur.pos
	lk, fk := int64(last.Key), int64(first.Key)
	var missed int64
	switch {
	case fk > lk:
		missed = fk - lk - 1
	case lk > 0 && fk < 0 && (math.MaxInt32-lk)+(fk-math.MinInt32) < 1<<24:
		missed = (math.MaxInt32 - lk) + (fk - math.MinInt32) // the keys wrapped
	default:
		f.log.Warn("vCenter's event history starts anew (keys went back): vCenter was restored or replaced; following its new events",
			"last_time", last.Time, "last_key", last.Key, "first_time", first.CreatedTime, "first_key", first.Key)
		return
	}
	if missed == 0 {
		f.log.Debug("the last event handed on is no longer in vCenter's history; nothing after it is missing",
			"last_key", last.Key, "first_key", first.Key)
		return
	}
	f.log.Warn("vCenter no longer holds events the router had not read (its history was pruned); they are lost",
		"missing_after_time", last.Time, "missing_after_key", last.Key,
		"missing_before_time", first.CreatedTime, "missing_before_key", first.Key, "missing_estimate", missed)
	f.s.missed.Add(float64(missed))
}

// decoded drops nil entries. eventElem decodes every event, known or not,
// so there are none unless vCenter sends an empty element; nothing of such
// an entry is known, not even its key, so it can only be counted.
func (f *follower) decoded(page []types.BaseEvent) []types.BaseEvent {
	out := page[:0:0]
	for _, e := range page {
		if e == nil {
			if !f.catchUp {
				f.s.handedOn.Inc()
			}
			f.log.Warn("skipped an empty event entry")
			continue
		}
		out = append(out, e)
	}
	return out
}

// hand converts e and hands it on, then moves the cursor past it.
func (f *follower) hand(ctx context.Context, e types.BaseEvent) error {
	if t := e.GetEvent().CreatedTime; t.Before(f.cur.pos.Time) && !f.catchUp {
		// Only a late event, created before the last one handed on,
		// gets here with such a time (see cursor.late).
		f.s.late.Inc()
		f.log.Warn("an event became visible after events created later; handing it on late",
			"key", e.GetEvent().Key, "created_time", t, "last_time", f.cur.pos.Time, "last_key", f.cur.pos.Key)
	}
	if b, ok := e.(*badEvent); ok {
		return f.handBad(ctx, b)
	}
	ev := f.s.conv.Convert(f.cn.uuid, e)
	if u, ok := e.(*UnknownEvent); ok && !f.catchUp {
		f.s.handedOn.Inc()
		if f.warned == nil {
			f.warned = map[string]bool{}
		}
		if !f.warned[u.TypeName()] && len(f.warned) < maxWarnedTypes {
			f.warned[u.TypeName()] = true
			f.log.Warn("handing on an event of a type the SDK does not know, with the fields every event has",
				"type", u.TypeName(), "key", ev.Key)
		}
	}
	if err := f.h.Handle(ctx, ev); err != nil {
		return err
	}
	f.cur.advance(e.GetEvent())
	f.handed++
	if f.catchUp {
		return nil
	}
	f.s.events.Inc()
	f.s.lastEvent.Set(float64(ev.Time.UnixNano()) / 1e9)
	f.s.stat.Add(1)
	return nil
}
