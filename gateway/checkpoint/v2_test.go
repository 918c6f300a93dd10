package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// TestParseVersions: version 1 loads as before; version 2 keeps a position
// per processor, none before the stream's watermark.
func TestParseVersions(t *testing.T) {
	head := `"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:10Z","key":10}`
	tests := []struct {
		name, json string
		err        string // "" is valid
	}{
		{"version 1", `{"version":1,` + head + `,"updated":"2026-01-01T00:00:00Z"}`, ""},
		{"version 2", `{"version":2,` + head + `,"processors":{"a":{"createdTime":"2026-01-01T00:00:10Z","key":10},"b":{"createdTime":"2026-01-01T00:00:20Z","key":20}}}`, ""},
		{"version 2 without processors", `{"version":2,` + head + `}`, ""},
		{"processor before the watermark", `{"version":2,` + head + `,"processors":{"a":{"createdTime":"2026-01-01T00:00:09Z","key":9}}}`, "processor a position (key 9) before the watermark"},
		{"processor without a name", `{"version":2,` + head + `,"processors":{"":{"createdTime":"2026-01-01T00:00:10Z","key":10}}}`, "without a name"},
		{"version 1 with processors", `{"version":1,` + head + `,"processors":{}}`, "version 1 checkpoint with processor positions"},
		{"version 3", `{"version":3,` + head + `}`, "unknown checkpoint version 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json), source)
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("error %v, want %q", err, tt.err)
			}
		})
	}
}

// mapWM is a processor's watermarks per stream.
type mapWM struct {
	mu sync.Mutex
	at map[string]gateway.Position
}

func (m *mapWM) Watermark(stream string) (gateway.Position, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.at[stream]
	return p, ok
}

func (m *mapWM) set(stream string, p gateway.Position) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at == nil {
		m.at = map[string]gateway.Position{}
	}
	m.at[stream] = p
}

// TestVersion1Loads: a version 1 file resumes every processor at its
// watermark, and the next write is version 2 with a position per
// processor and their minimum.
func TestVersion1Loads(t *testing.T) {
	s, _ := NewStore(t.TempDir(), nil, quiet())
	v1 := `{"version":1,"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"1970-01-12T13:46:40.123456789Z","key":7},"updated":"2026-01-01T00:00:00Z"}`
	if err := os.WriteFile(s.path(source), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := &mapWM{}, &mapWM{}
	k := NewKeeper(s, []Processor{{"a", a}, {"b", b}}, 0, "vc", quiet(), metrics.New())
	r, ok := k.ResumeAll(uuid, source, time.Unix(1_000_100, 0))
	if !ok || r.Position != pos(1_000_000, 7) || r.Processors["a"] != r.Position || r.Processors["b"] != r.Position {
		t.Fatalf("resume %+v %v, want every processor at the version 1 watermark", r, ok)
	}
	a.set("vc", pos(1_000_010, 9))
	b.set("vc", pos(1_000_005, 8))
	a.set("other", pos(1_000_050, 99)) // another stream's: not this keeper's
	k.Flush()
	f, ok, err := s.Load(uuid, source)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if f.Version != 2 || f.Watermark != pos(1_000_005, 8) || f.Processors["a"] != pos(1_000_010, 9) || f.Processors["b"] != pos(1_000_005, 8) {
		t.Errorf("written %+v: want version 2, a at key 9, b and the stream at key 8", f)
	}
}

// recorder is a processor that records the keys it delivered; while down,
// its destination is unreachable for events after key heldAfter.
type recorder struct {
	mu        sync.Mutex
	keys      []int32
	down      bool
	heldAfter int32
}

func (p *recorder) Start(context.Context) error { return nil }
func (p *recorder) Subscription(context.Context) (gateway.Subscription, error) {
	return gateway.SubscriptionFunc(func(*gateway.Event) bool { return true }), nil
}
func (p *recorder) Destinations(*gateway.Event) []string { return []string{"f"} }
func (p *recorder) Ready() error                         { return nil }
func (p *recorder) Close() error                         { return nil }
func (p *recorder) Deliver(_ context.Context, _ string, evs []*gateway.Event) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(evs))
	for i, ev := range evs {
		if p.down && ev.Key > p.heldAfter {
			errs[i] = gateway.Unreachable(errors.New("connection refused"))
			continue
		}
		p.keys = append(p.keys, ev.Key)
	}
	return errs
}

func (p *recorder) got() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprint(p.keys)
}

type pass struct{}

func (pass) Run(_ context.Context, ev *gateway.Event) (*gateway.Event, error) { return ev, nil }

// pipeline is one run of a router: a dispatcher per processor, the
// stream's keeper and router.
type pipeline struct {
	disps  map[string]*gateway.Dispatcher
	keeper *Keeper
	router *gateway.Router
}

func newPipeline(s *Store, procs map[string]*recorder, order ...string) *pipeline {
	p := &pipeline{disps: map[string]*gateway.Dispatcher{}}
	var routes []gateway.Route
	var kp []Processor
	for _, name := range order {
		d := gateway.NewDispatcher(gateway.DispatcherOptions{Processor: procs[name], ProcessorName: name, Stream: "vc",
			BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond, Log: quiet(), Metrics: metrics.New()})
		p.disps[name] = d
		routes = append(routes, gateway.Route{Name: name, Dispatcher: d})
		kp = append(kp, Processor{Name: name, Watermarks: d})
	}
	p.keeper = NewKeeper(s, kp, 0, "vc", quiet(), metrics.New())
	p.router = gateway.NewRouter(gateway.RouterOptions{Stream: "vc", Chain: pass{}, Routes: routes, Log: quiet(), Resume: p.keeper.ResumeAll})
	return p
}

func (p *pipeline) handle(t *testing.T, from, to int32) {
	t.Helper()
	for k := from; k <= to; k++ {
		ev := &gateway.Event{Stream: "vc", Key: k, Time: time.Unix(1_000_000+int64(k), 0).UTC(), Entity: "VirtualMachine:vm-1"} // one object: delivered in order
		if err := p.router.Handle(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

func (p *pipeline) waitFor(t *testing.T, name string, key int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if wm, ok := p.disps[name].Watermark("vc"); ok && wm.Key == key {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processor %s's watermark never reached key %d", name, key)
		}
		time.Sleep(time.Millisecond)
	}
}

func (p *pipeline) stop() {
	for _, d := range p.disps {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_ = d.Close(ctx) // a held destination's events stay unacknowledged
		cancel()
	}
	p.keeper.Stop()
}

// TestPerProcessorResume: two processors on one stream, one held behind.
// After a restart the stream resumes at the one behind; it receives every
// event it missed, the other receives none twice, and a processor new to
// the file starts at the stream's position.
func TestPerProcessorResume(t *testing.T) {
	s, _ := NewStore(t.TempDir(), nil, quiet())
	now := time.Unix(1_000_000, 0)

	ahead, behind := &recorder{}, &recorder{down: true, heldAfter: 4}
	run1 := newPipeline(s, map[string]*recorder{"ahead": ahead, "behind": behind}, "ahead", "behind")
	if _, ok := run1.router.Resume(uuid, source, now); ok {
		t.Fatal("resumed without a checkpoint")
	}
	run1.handle(t, 1, 10)
	run1.waitFor(t, "ahead", 10)
	run1.waitFor(t, "behind", 4)
	run1.stop()
	f, ok, err := s.Load(uuid, source)
	if err != nil || !ok || f.Watermark.Key != 4 || f.Processors["ahead"].Key != 10 || f.Processors["behind"].Key != 4 {
		t.Fatalf("checkpoint after run 1 %+v: want ahead at key 10, behind and the stream at key 4", f)
	}

	ahead2, behind2, added := &recorder{}, &recorder{}, &recorder{}
	run2 := newPipeline(s, map[string]*recorder{"ahead": ahead2, "behind": behind2, "added": added}, "ahead", "behind", "added")
	at, ok := run2.router.Resume(uuid, source, now.Add(time.Minute))
	if !ok || at.Key != 4 {
		t.Fatalf("resumed at %+v %v, want the stream's minimum, key 4", at, ok)
	}
	run2.handle(t, 5, 12) // the stream reads on after key 4
	for _, name := range []string{"ahead", "behind", "added"} {
		run2.waitFor(t, name, 12)
	}
	if got := behind2.got(); got != "[5 6 7 8 9 10 11 12]" {
		t.Errorf("the processor behind got %s after the restart, want what it missed and on", got)
	}
	if got := ahead2.got(); got != "[11 12]" {
		t.Errorf("the processor ahead got %s after the restart, want none twice: [11 12]", got)
	}
	if got := added.got(); got != "[5 6 7 8 9 10 11 12]" {
		t.Errorf("the processor new to the file got %s, want from the stream's position", got)
	}
	run2.stop()
	f, _, _ = s.Load(uuid, source)
	for _, name := range []string{"ahead", "behind", "added"} {
		if f.Processors[name].Key != 12 {
			t.Errorf("final checkpoint %+v: processor %s not at key 12", f, name)
		}
	}
	if f.Watermark.Key != 12 || f.Version != Version {
		t.Errorf("final checkpoint %+v: want version %d at key 12", f, Version)
	}
}

// TestInitialSaveFails: when the initial checkpoint cannot be written (a
// full disk), the keeper still writes once a watermark moves.
func TestInitialSaveFails(t *testing.T) {
	fsys := &crashFS{failRename: true}
	s, _ := NewStore(t.TempDir(), fsys, quiet())
	w := &mapWM{}
	k := NewKeeper(s, one(w), 0, "vc", quiet(), metrics.New())
	if _, ok := k.ResumeAll(uuid, source, time.Unix(1_000_000, 0)); ok {
		t.Fatal("resumed without a checkpoint")
	}
	if _, ok, _ := s.Load(uuid, source); ok {
		t.Fatal("the initial checkpoint was written through a failing rename")
	}
	fsys.failRename = false
	w.set("vc", pos(1_000_001, 5))
	k.Flush()
	if f, ok, err := s.Load(uuid, source); err != nil || !ok || f.Watermark != pos(1_000_001, 5) {
		t.Errorf("checkpoint %+v %v %v, want the watermark written once the disk works", f, ok, err)
	}
}
