package checkpoint

import (
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Interval is how often a moved watermark is written.
const Interval = time.Second

// Watermarker reports a stream's acknowledged watermark (the dispatcher).
type Watermarker interface {
	Watermark(stream string) (gateway.Position, bool)
}

// Processor is one processor taking the keeper's stream: its name (the key
// of its position in the file) and its dispatcher.
type Processor struct {
	Name       string
	Watermarks Watermarker
}

// Keeper connects a stream's resume question to the store and writes its
// processors' watermarks, and their minimum as the stream's position, every
// Interval when one moved (Start), and once more at shutdown (Stop).
type Keeper struct {
	store        *Store
	procs        []Processor
	replayWindow time.Duration
	stream       string // metric label
	log          *slog.Logger
	writes       [2]prometheus.Counter // ok, failed
	lastWrite    prometheus.Gauge      // Unix seconds of the last successful write
	exceeded     prometheus.Counter
	failed       chan error // Failed

	// saveMu serializes every read of the watermark with its save, so
	// two saves never run at once and an older position is never written
	// after a newer one.
	saveMu sync.Mutex

	mu      sync.Mutex
	uuid    string
	source  string
	written gateway.Position            // the stream's position written or resumed from
	at      map[string]gateway.Position // each processor's, written or resumed from
	// ahead holds the resumed positions of processors ahead of the
	// stream's: until its watermark passes it, such a processor is there.
	ahead   map[string]gateway.Position
	broken  error         // a checkpoint could not be read: never save
	stopped bool          // Stop wrote the final checkpoint
	stop    chan struct{} // closed by Stop
	done    chan struct{} // closed when Start's loop returns; nil before Start
}

// NewKeeper returns a keeper for one stream, named stream, taken by procs.
func NewKeeper(store *Store, procs []Processor, replayWindow time.Duration, stream string, log *slog.Logger, m *metrics.Metrics) *Keeper {
	return &Keeper{
		store: store, procs: procs, replayWindow: replayWindow, stream: stream, log: log,
		writes:    [2]prometheus.Counter{m.CheckpointWrites.WithLabelValues(stream, "ok"), m.CheckpointWrites.WithLabelValues(stream, "failed")},
		lastWrite: m.CheckpointLastWrite.WithLabelValues(stream),
		exceeded:  m.ReplayWindowExceeded.WithLabelValues(stream),
		failed:    make(chan error, 1),
		stop:      make(chan struct{}),
	}
}

// Failed delivers the error of a checkpoint that could not be read
// (permission denied, an I/O error): the daemon stops on it. Until then
// the keeper writes nothing, so a good checkpoint is never replaced by
// "now".
func (k *Keeper) Failed() <-chan error { return k.failed }

// Resume is the stream's question at a connection: where to start. A
// checkpoint older than the replay window (judged by vCenter's clock, now)
// starts at the window's beginning instead, with a warning: vCenter may not
// hold older history anyway, and replaying days of events surprises
// functions more than it helps.
//
// A checkpoint written for another instance UUID at the same URL is a
// vCenter restored from a backup or replaced: its event keys start again,
// so it resumes by time alone (every event created after the checkpoint's
// time), and the checkpoint follows the new UUID from then on. The stream
// asks again whenever it reconnects to a changed UUID.
func (k *Keeper) Resume(instanceUUID, source string, now time.Time) (gateway.Position, bool) {
	r, ok := k.ResumeAll(instanceUUID, source, now)
	return r.Position, ok
}

// ResumeAll is Resume with each processor's own position
// (gateway.RouterOptions.Resume): a processor ahead of the stream's
// position skips what it had finished; one new to the file, or every one
// when the position moved for the instance UUID or the replay window,
// starts at the stream's position.
func (k *Keeper) ResumeAll(instanceUUID, source string, now time.Time) (gateway.Resume, bool) {
	k.saveMu.Lock()
	defer k.saveMu.Unlock()
	f, ok, err := k.store.Load(instanceUUID, source)
	if err != nil {
		k.fail(err)
		return gateway.Resume{}, false
	}
	k.mu.Lock()
	k.uuid, k.source = instanceUUID, source
	k.mu.Unlock()
	if !ok {
		// Starting from "now": record it at once, so a crash before the
		// first watermark is written resumes here rather than at a later
		// "now" that would skip what was in flight.
		start := gateway.Position{Time: now, Key: math.MinInt32}
		at := k.everyAt(start, nil)
		k.resumedAt(start, at, nil)
		k.save(start, at, "writing the initial checkpoint failed")
		return gateway.Resume{}, false
	}
	pos := f.Watermark
	if f.InstanceUUID != instanceUUID {
		// The smallest key at the checkpoint's time: every event created
		// after it comes after it, whatever its key.
		pos = gateway.Position{Time: pos.Time, Key: math.MinInt32}
		k.log.Warn("vCenter instance UUID changed (restored from a backup or replaced); resuming by time after the checkpoint, and keeping the checkpoint under the new UUID",
			"vcenter", source, "checkpoint_instance_uuid", f.InstanceUUID, "instance_uuid", instanceUUID, "created_time", pos.Time)
	}
	if k.replayWindow > 0 && now.Sub(pos.Time) > k.replayWindow {
		start := now.Add(-k.replayWindow)
		k.exceeded.Inc()
		k.log.Warn("checkpoint older than replay_window; resuming at the window's beginning, events before it are not replayed",
			"checkpoint", pos.Time, "replay_window", k.replayWindow, "resume_from", start)
		// The smallest key at the window's start: every event created at
		// or after that instant comes after it.
		pos = gateway.Position{Time: start, Key: math.MinInt32}
	}
	own := f.Processors
	if f.InstanceUUID != instanceUUID {
		// Another vCenter's keys: the positions mean nothing here.
		own = nil
	}
	at := k.everyAt(pos, own)
	ahead := map[string]gateway.Position{}
	for name, q := range at {
		if q != pos {
			ahead[name] = q
		}
	}
	// Recorded before any save, so that Flush works from here even when
	// the save below fails.
	k.resumedAt(pos, at, ahead)
	if f.InstanceUUID != instanceUUID {
		k.save(pos, at, "writing the checkpoint under the new instance UUID failed")
	}
	k.log.Info("resuming from checkpoint", "vcenter", source, "stream", k.stream, "created_time", pos.Time, "key", pos.Key)
	return gateway.Resume{Position: pos, Processors: at}, true
}

// resumedAt records where the stream and its processors resumed.
func (k *Keeper) resumedAt(pos gateway.Position, at, ahead map[string]gateway.Position) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.written, k.at, k.ahead = pos, at, ahead
}

// everyAt returns every processor's position: its own, when it comes after
// pos, else pos. Processors of own no longer configured are left out.
func (k *Keeper) everyAt(pos gateway.Position, own map[string]gateway.Position) map[string]gateway.Position {
	at := make(map[string]gateway.Position, len(k.procs))
	for _, p := range k.procs {
		at[p.Name] = pos
		if q, ok := own[p.Name]; ok && pos.Before(q) {
			at[p.Name] = q
		}
	}
	return at
}

// fail records an unreadable checkpoint: nothing is saved any more, and
// Failed reports it.
func (k *Keeper) fail(err error) {
	k.mu.Lock()
	first := k.broken == nil
	k.broken = err
	k.mu.Unlock()
	k.log.Error("checkpoint cannot be read; stopping rather than overwriting it (fix the file's permissions or storage and restart)", "err", err)
	if first {
		k.failed <- err
	}
}

// save writes pos and the processors' positions at under the current UUID
// and records them as written. The caller holds saveMu.
func (k *Keeper) save(pos gateway.Position, at map[string]gateway.Position, failure string) {
	k.mu.Lock()
	uuid, source, skip := k.uuid, k.source, k.broken != nil || k.stopped
	k.mu.Unlock()
	if skip || uuid == "" {
		return
	}
	if err := k.store.Save(uuid, source, pos, at); err != nil {
		k.writes[1].Inc()
		k.log.Error(failure, "err", err)
		return
	}
	k.writes[0].Inc()
	k.lastWrite.SetToCurrentTime()
	k.mu.Lock()
	k.written, k.at = pos, at
	k.mu.Unlock()
}

// Start writes the watermark every Interval when it moved, in a goroutine,
// until Stop.
func (k *Keeper) Start() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.done != nil || k.stopped {
		return
	}
	k.done = make(chan struct{})
	go k.loop(k.stop, k.done)
}

func (k *Keeper) loop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			k.log.Debug("checkpoint loop stopped", "stream", k.stream)
			return
		case <-t.C:
			k.Flush()
		}
	}
}

// Stop ends Start's loop, waits for it, and writes the final checkpoint:
// the daemon calls it after deliveries in flight finished and before it
// logs out of vCenter. Nothing is written after it.
func (k *Keeper) Stop() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	close(k.stop)
	done := k.done
	k.mu.Unlock()
	if done != nil {
		<-done
	}
	k.Flush()
	k.mu.Lock()
	k.stopped = true
	written, broken := k.written, k.broken
	k.mu.Unlock()
	if broken == nil {
		k.log.Info("final checkpoint", "stream", k.stream, "created_time", written.Time, "key", written.Key)
	}
}

// Flush writes the watermarks now if one moved: each processor's (its
// dispatcher's, or where it resumed while that is further on), and their
// minimum as the stream's.
func (k *Keeper) Flush() {
	k.saveMu.Lock()
	defer k.saveMu.Unlock()
	k.mu.Lock()
	written, prev, ahead := k.written, k.at, k.ahead
	k.mu.Unlock()
	if prev == nil {
		return // not resumed yet: nothing to write under
	}
	at := make(map[string]gateway.Position, len(k.procs))
	moved := false
	for _, p := range k.procs {
		cur, ok := prev[p.Name]
		if !ok {
			cur = written
		}
		if wm, ok := p.Watermarks.Watermark(k.stream); ok {
			// The dispatcher's watermark, which never moves back, is the
			// truth: it may be before a "now" the stream started at (an
			// event created just before), and writing the start position
			// instead would skip what is still in flight. A processor that
			// resumed ahead stays there while it skips to it.
			next := wm
			if a, ok := ahead[p.Name]; ok && wm.Before(a) {
				next = a
			}
			if next != cur {
				cur, moved = next, true
			}
		}
		at[p.Name] = cur
	}
	if !moved {
		return
	}
	low, first := written, true
	for _, pos := range at {
		if first || pos.Before(low) {
			low, first = pos, false
		}
	}
	k.save(low, at, "writing checkpoint failed; the previous one stays")
}
