package checkpoint

import (
	"context"
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

// Watermarker reports the acknowledged watermark (the dispatcher).
type Watermarker interface {
	Watermark() (gateway.Position, bool)
	Pending() (int, gateway.Position)
}

// Keeper connects a stream's resume question to the store and writes the
// dispatcher's watermark every Interval when it moved, and at shutdown.
type Keeper struct {
	store        *Store
	wm           Watermarker
	replayWindow time.Duration
	stream       string // metric label
	log          *slog.Logger
	writes       [2]prometheus.Counter // ok, failed
	lag          prometheus.Gauge
	exceeded     prometheus.Counter

	mu      sync.Mutex
	uuid    string
	source  string
	written gateway.Position
}

// NewKeeper returns a keeper for one stream.
func NewKeeper(store *Store, wm Watermarker, replayWindow time.Duration, stream string, log *slog.Logger, m *metrics.Metrics) *Keeper {
	return &Keeper{
		store: store, wm: wm, replayWindow: replayWindow, stream: stream, log: log,
		writes:   [2]prometheus.Counter{m.CheckpointWrites.WithLabelValues("ok"), m.CheckpointWrites.WithLabelValues("failed")},
		lag:      m.WatermarkLag.WithLabelValues(stream),
		exceeded: m.ReplayWindowExceeded.WithLabelValues(stream),
	}
}

// Resume is the stream's question at its first connection: where to start.
// A checkpoint older than the replay window (judged by vCenter's clock,
// now) starts at the window's beginning instead, with a warning: vCenter
// may not hold older history anyway, and replaying days of events surprises
// functions more than it helps.
func (k *Keeper) Resume(instanceUUID, source string, now time.Time) (gateway.Position, bool) {
	k.mu.Lock()
	k.uuid, k.source = instanceUUID, source
	k.mu.Unlock()
	f, ok := k.store.Load(instanceUUID, source)
	if !ok {
		// Starting from "now": record it at once, so a crash before the
		// first watermark is written resumes here rather than at a later
		// "now" that would skip what was in flight.
		start := gateway.Position{Time: now, Key: math.MinInt32}
		if err := k.store.Save(instanceUUID, source, start); err != nil {
			k.writes[1].Inc()
			k.log.Error("writing the initial checkpoint failed", "err", err)
		} else {
			k.writes[0].Inc()
		}
		k.mu.Lock()
		k.written = start
		k.mu.Unlock()
		return gateway.Position{}, false
	}
	pos := f.Watermark
	if k.replayWindow > 0 && now.Sub(pos.Time) > k.replayWindow {
		start := now.Add(-k.replayWindow)
		k.exceeded.Inc()
		k.log.Warn("checkpoint older than replay_window; resuming at the window's beginning, events before it are not replayed",
			"checkpoint", pos.Time, "replay_window", k.replayWindow, "resume_from", start)
		// The smallest key at the window's start: every event created at
		// or after that instant comes after it.
		pos = gateway.Position{Time: start, Key: math.MinInt32}
	}
	k.mu.Lock()
	k.written = pos
	k.mu.Unlock()
	k.log.Info("resuming from checkpoint", "vcenter", source, "created_time", pos.Time, "key", pos.Key)
	return pos, true
}

// Run writes the watermark every Interval when it moved, until ctx is done.
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.Flush()
		}
	}
}

// Flush writes the watermark now if it moved. It is called by Run and once
// more at shutdown, after deliveries in flight finished.
func (k *Keeper) Flush() {
	wm, ok := k.wm.Watermark()
	if _, newest := k.wm.Pending(); ok && !newest.Time.IsZero() {
		k.lag.Set(max(newest.Time.Sub(wm.Time).Seconds(), 0))
	}
	k.mu.Lock()
	uuid, source, written := k.uuid, k.source, k.written
	k.mu.Unlock()
	if !ok || uuid == "" || wm == written {
		return
	}
	if err := k.store.Save(uuid, source, wm); err != nil {
		k.writes[1].Inc()
		k.log.Error("writing checkpoint failed; the previous one stays", "err", err)
		return
	}
	k.writes[0].Inc()
	k.mu.Lock()
	k.written = wm
	k.mu.Unlock()
}
