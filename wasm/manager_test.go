package wasm

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// configMap lays out a directory the way the kubelet mounts a ConfigMap:
// files in a timestamped directory, ..data a symlink to it, and each file
// name a symlink to ..data/<name>. update swaps ..data atomically.
type configMap struct {
	t   testing.TB
	dir string
	gen int
	// keepOld leaves the previous version's directory in place after a
	// swap (the kubelet removes it a moment later).
	keepOld bool
}

func newConfigMap(t testing.TB, files map[string][]byte) *configMap {
	c := &configMap{t: t, dir: t.TempDir()}
	c.update(files)
	return c
}

func (c *configMap) update(files map[string][]byte) {
	t := c.t
	c.gen++
	ts := fmt.Sprintf("..2026_11_25_12_00_%02d.%09d", c.gen, c.gen)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		write(t, filepath.Join(c.dir, ts), name, b)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	var old string
	if target, err := os.Readlink(filepath.Join(c.dir, "..data")); err == nil {
		old = target
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	// Add the new names' symlinks, remove the vanished ones, as the
	// kubelet does after the swap.
	ents, _ := os.ReadDir(c.dir)
	for _, e := range ents {
		if e.Name()[0] != '.' {
			if _, keep := files[e.Name()]; !keep {
				if err := os.Remove(filepath.Join(c.dir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for name := range files {
		link := filepath.Join(c.dir, name)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" && !c.keepOld {
		if err := os.RemoveAll(filepath.Join(c.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// recorder is an Apply callback that keeps every list it was given.
type recorder struct {
	mu    sync.Mutex
	lists [][]string
	chain *filters.Chain
}

func (r *recorder) apply(fs []filters.Filter) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.Name()
	}
	r.lists = append(r.lists, names)
	if r.chain != nil {
		return r.chain.SetUserFilters(fs)
	}
	return nil
}

func (r *recorder) last() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lists) == 0 {
		return nil
	}
	return r.lists[len(r.lists)-1]
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lists)
}

func entry(addr string) config.WasmFilter {
	o := opts()
	o.Address = addr
	return o
}

func newManager(t *testing.T, m *metrics.Metrics, rec *recorder, entries ...config.WasmFilter) (*Manager, error) {
	t.Helper()
	mgr, err := NewManager(context.Background(), ManagerOptions{
		Filters: entries, Metrics: m, Apply: rec.apply, Debounce: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err == nil {
		t.Cleanup(func() { _ = mgr.Close() })
	}
	return mgr, err
}

func TestManagerStartup(t *testing.T) {
	pass := wasmtest.WAT(t, passWAT)
	drop := wasmtest.WAT(t, guest(`(i32.const 1)`, ""))
	for _, tc := range []struct {
		name    string
		files   map[string][]byte
		file    string // address a file of the directory instead
		want    []string
		wantErr string
	}{
		{"directory in name order", map[string][]byte{"b.wasm": drop, "a.wasm": pass, ".hidden.wasm": pass, "notes.txt": []byte("x")},
			"", []string{"a.wasm", "b.wasm"}, ""},
		{"empty directory", map[string][]byte{}, "", []string{}, ""},
		{"file address", map[string][]byte{"a.wasm": pass, "b.wasm": drop}, "b.wasm", []string{"b.wasm"}, ""},
		{"one invalid module", map[string][]byte{"a.wasm": pass, "bad.wasm": []byte("garbage")}, "", nil, "bad.wasm: not a WebAssembly module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tc.files {
				write(t, dir, name, b)
			}
			addr := dir
			if tc.file != "" {
				addr = filepath.Join(dir, tc.file)
			}
			rec := &recorder{}
			_, err := newManager(t, metrics.New(), rec, entry(addr))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatal("NewManager succeeded")
				}
				contains(t, err.Error(), tc.wantErr)
				if rec.count() != 0 {
					t.Fatal("Apply called for a failed start")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := rec.last(); !slices.Equal(got, tc.want) || rec.count() != 1 {
				t.Fatalf("applied %v (%d calls), want %v once", rec.lists, rec.count(), tc.want)
			}
		})
	}
	t.Run("missing path", func(t *testing.T) {
		_, err := newManager(t, metrics.New(), &recorder{}, entry("/nonexistent/filters"))
		contains(t, fmt.Sprint(err), "/nonexistent/filters: no such file or directory")
	})
	t.Run("duplicate names", func(t *testing.T) {
		d1, d2 := t.TempDir(), t.TempDir()
		write(t, d1, "a.wasm", pass)
		write(t, d2, "a.wasm", pass)
		_, err := newManager(t, metrics.New(), &recorder{}, entry(d1), entry(d2))
		contains(t, fmt.Sprint(err), "file names must be unique")
	})
	t.Run("entries run in config order", func(t *testing.T) {
		d1, d2 := t.TempDir(), t.TempDir()
		write(t, d1, "z.wasm", pass)
		write(t, d2, "a.wasm", pass)
		rec := &recorder{}
		if _, err := newManager(t, metrics.New(), rec, entry(d1), entry(d2)); err != nil {
			t.Fatal(err)
		}
		if got := rec.last(); !slices.Equal(got, []string{"z.wasm", "a.wasm"}) {
			t.Fatalf("applied %v", got)
		}
	})
}

// streamer pushes events through a chain until stopped and checks that
// every one comes out passed or dropped, never lost or errored.
type streamer struct {
	chain               *filters.Chain
	in, passed, dropped atomic.Int64
	errs                atomic.Int64
	firstErr            atomic.Value
	lastSubjects        sync.Map // subjects seen on output events
	stop                chan struct{}
	done                chan struct{}
}

func newStreamer(chain *filters.Chain) *streamer {
	s := &streamer{chain: chain, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			default:
			}
			ev := event("VmPoweredOffEvent", fmt.Sprintf("vm-%d", i))
			s.in.Add(1)
			out, err := chain.Run(context.Background(), ev)
			switch {
			case err != nil:
				s.errs.Add(1)
				s.firstErr.CompareAndSwap(nil, err.Error())
			case out == nil:
				s.dropped.Add(1)
			default:
				s.passed.Add(1)
				s.lastSubjects.Store(out.Subject, true)
			}
		}
	}()
	return s
}

func (s *streamer) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	<-s.done
	if n := s.errs.Load(); n > 0 {
		t.Fatalf("%d events failed, first: %v", n, s.firstErr.Load())
	}
	if s.in.Load() != s.passed.Load()+s.dropped.Load() {
		t.Fatalf("in %d, passed %d, dropped %d: events lost", s.in.Load(), s.passed.Load(), s.dropped.Load())
	}
}

type allSubscribed struct{}

func (allSubscribed) Subscription(context.Context) (gateway.Subscription, error) {
	return gateway.SubscriptionFunc(func(*gateway.Event) bool { return true }), nil
}

// setSubject returns a filter that sets every event's subject to s.
func setSubject(t testing.TB, s string) []byte {
	out := `{"specversion":"1.0","id":"x","source":"/f","type":"t","subject":"` + s + `"}`
	return wasmtest.WAT(t, constOutput(out, 2))
}

func TestReloadBySymlinkSwap(t *testing.T) {
	m := metrics.New()
	log := slog.New(slog.DiscardHandler)
	chain := filters.NewChain(filters.NewRouting(allSubscribed{}), log, m)
	rec := &recorder{chain: chain}
	cm := newConfigMap(t, map[string][]byte{"rewrite.wasm": setSubject(t, "V1"), "pass.wasm": wasmtest.WAT(t, passWAT)})
	mgr, err := newManager(t, m, rec, entry(cm.dir))
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); !slices.Equal(got, []string{"pass.wasm", "rewrite.wasm"}) {
		t.Fatalf("applied %v", got)
	}
	s := newStreamer(chain)
	eventually(t, "events through V1", func() bool { _, ok := s.lastSubjects.Load("V1"); return ok })
	firstPass := mgr.Filters()[0]

	// A new version of one module: the chain switches without a restart
	// and the unchanged module is kept as it is.
	cm.update(map[string][]byte{"rewrite.wasm": setSubject(t, "V2"), "pass.wasm": wasmtest.WAT(t, passWAT)})
	eventually(t, "events through V2", func() bool { _, ok := s.lastSubjects.Load("V2"); return ok })
	if mgr.Filters()[0] != firstPass {
		t.Fatal("the unchanged module was reloaded")
	}
	ok := testutil.ToFloat64(m.FilterReloads.WithLabelValues("ok"))
	if ok != 1 {
		t.Fatalf("reloads{ok} = %v, want 1", ok)
	}

	// A broken module in the next update: the running chain stays.
	before := rec.count()
	cm.update(map[string][]byte{"rewrite.wasm": setSubject(t, "V3"), "pass.wasm": []byte("garbage")})
	eventually(t, "the failed reload", func() bool { return testutil.ToFloat64(m.FilterReloads.WithLabelValues("failed")) >= 1 })
	if rec.count() != before {
		t.Fatal("a failed reload applied a new list")
	}
	s.lastSubjects.Delete("V2")
	eventually(t, "events still through V2", func() bool { _, ok := s.lastSubjects.Load("V2"); return ok })
	if _, ok := s.lastSubjects.Load("V3"); ok {
		t.Fatal("an event went through the refused update")
	}

	// A module removed: the list shrinks.
	cm.update(map[string][]byte{"pass.wasm": wasmtest.WAT(t, passWAT)})
	eventually(t, "the removal", func() bool { return slices.Equal(rec.last(), []string{"pass.wasm"}) })
	s.lastSubjects.Delete("VmPoweredOffEvent")
	eventually(t, "unrewritten events", func() bool { _, ok := s.lastSubjects.Load("VmPoweredOffEvent"); return ok })
	s.finish(t)
}

func TestReloadFileAddress(t *testing.T) {
	m := metrics.New()
	rec := &recorder{}
	cm := newConfigMap(t, map[string][]byte{"f.wasm": wasmtest.WAT(t, passWAT)})
	mgr, err := newManager(t, m, rec, entry(filepath.Join(cm.dir, "f.wasm")))
	if err != nil {
		t.Fatal(err)
	}
	cm.update(map[string][]byte{"f.wasm": wasmtest.WAT(t, guest(`(i32.const 1)`, ""))})
	eventually(t, "the reload", func() bool { return rec.count() == 2 })
	if r := mgr.Filters()[0].Filter(context.Background(), event("A", "vm")); r.Verdict != filters.Drop {
		t.Fatalf("verdict %v, want the new module's drop", r.Verdict)
	}
}

// TestReloadTenFiltersUnderLoad swaps a directory of 10 filters while
// events stream through the chain: none may be lost or fail, including the
// events that are between two filters when the list is swapped.
func TestReloadTenFiltersUnderLoad(t *testing.T) {
	m := metrics.New()
	chain := filters.NewChain(filters.NewRouting(allSubscribed{}), slog.New(slog.DiscardHandler), m)
	rec := &recorder{chain: chain}
	version := func(v string) map[string][]byte {
		files := map[string][]byte{}
		for i := range 10 {
			src := passWAT
			if i == 9 {
				src = (constOutput(`{"specversion":"1.0","id":"x","source":"/f","type":"t","subject":"`+v+`"}`, 2))
			}
			files[fmt.Sprintf("f%02d.wasm", i)] = wasmtest.WAT(t, src)
		}
		return files
	}
	cm := newConfigMap(t, version("A"))
	if _, err := newManager(t, m, rec, entry(cm.dir)); err != nil {
		t.Fatal(err)
	}
	s := newStreamer(chain)
	for i, v := range []string{"B", "C", "D"} {
		cm.update(version(v))
		eventually(t, "version "+v, func() bool { _, ok := s.lastSubjects.Load(v); return ok })
		if got := testutil.ToFloat64(m.FilterReloads.WithLabelValues("ok")); got != float64(i+1) {
			t.Fatalf("reloads{ok} = %v, want %d", got, i+1)
		}
	}
	s.finish(t)
	if s.passed.Load() == 0 {
		t.Fatal("no event went through")
	}
}

// holdFilter holds the events with subject "hold" until released, telling
// the test when one arrives: an event in flight in a slow filter.
type holdFilter struct {
	arrived chan struct{}
	release chan struct{}
}

func (h *holdFilter) Name() string { return "hold" }
func (h *holdFilter) Filter(_ context.Context, ev *gateway.Event) filters.Result {
	if ev.Subject == "hold" {
		h.arrived <- struct{}{}
		<-h.release
	}
	return filters.Result{Verdict: filters.Pass}
}

// TestReloadEventFinishesWithItsList: an event in flight while a reload
// swaps the list sees only the modules of the list it started with, and
// those are closed only once it has finished.
func TestReloadEventFinishesWithItsList(t *testing.T) {
	m := metrics.New()
	chain := filters.NewChain(filters.NewRouting(allSubscribed{}), slog.New(slog.DiscardHandler), m)
	hold := &holdFilter{arrived: make(chan struct{}, 1), release: make(chan struct{})}
	cm := newConfigMap(t, map[string][]byte{"rewrite.wasm": setSubject(t, "V1")})
	mgr, err := NewManager(context.Background(), ManagerOptions{
		Filters: []config.WasmFilter{entry(cm.dir)}, Metrics: m, Log: slog.New(slog.DiscardHandler), Debounce: 20 * time.Millisecond,
		// The slow filter runs first, in every list.
		Apply: func(fs []filters.Filter) <-chan struct{} {
			return chain.SetUserFilters(append([]filters.Filter{hold}, fs...))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close() })
	old := mgr.Filters()[0].(*Filter)

	type result struct {
		out *gateway.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := chain.Run(context.Background(), event("hold", "vm"))
		done <- result{out, err}
	}()
	<-hold.arrived

	// A new version of the module and an added module that drops all.
	cm.update(map[string][]byte{"rewrite.wasm": setSubject(t, "V2"), "z-added.wasm": wasmtest.WAT(t, guest(`(i32.const 1)`, ""))})
	eventually(t, "the reload", func() bool { return len(mgr.Filters()) == 2 })
	if out, err := chain.Run(context.Background(), event("VmPoweredOffEvent", "vm")); out != nil || err != nil {
		t.Fatalf("a new event: out %v, err %v, want dropped by the new list", out, err)
	}
	if isClosed(old.done) {
		t.Fatal("the replaced module was closed under an event in flight")
	}

	close(hold.release)
	r := <-done
	if r.err != nil || r.out == nil || r.out.Subject != "V1" {
		t.Fatalf("the held event: out %+v, err %v, want subject V1 from its own list", r.out, r.err)
	}
	eventually(t, "the replaced module closed", func() bool { return isClosed(old.done) })
}

// TestScanReadsOneConfigMapVersion swaps a ConfigMap in the middle of a
// scan: the scan reads one version, never a mix.
func TestScanReadsOneConfigMapVersion(t *testing.T) {
	v1 := map[string][]byte{"a.wasm": []byte("a1"), "b.wasm": []byte("b1"), "c.wasm": []byte("c1")}
	v2 := map[string][]byte{"a.wasm": []byte("a2"), "b.wasm": []byte("b2"), "d.wasm": []byte("d2")}
	for _, tc := range []struct {
		name    string
		keepOld bool
		files   []string // entries addressing files; none: the directory
		want    map[string][]byte
	}{
		// The scan goes on in the version it resolved.
		{"old version still there", true, nil, v1},
		// The version went away under the scan: it starts again.
		{"old version removed", false, nil, v2},
		// Two entries of one ConfigMap read the same version.
		{"file addresses", true, []string{"a.wasm", "b.wasm"}, map[string][]byte{"a.wasm": v1["a.wasm"], "b.wasm": v1["b.wasm"]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm := newConfigMap(t, v1)
			cm.keepOld = tc.keepOld
			entries := []config.WasmFilter{entry(cm.dir)}
			if tc.files != nil {
				entries = nil
				for _, f := range tc.files {
					entries = append(entries, entry(filepath.Join(cm.dir, f)))
				}
			}
			m := &Manager{opts: ManagerOptions{Filters: entries}, log: slog.New(slog.DiscardHandler)}
			swapped := false
			m.afterRead = func(string) {
				if !swapped {
					swapped = true
					cm.update(v2)
				}
			}
			files, err := m.scan()
			if err != nil {
				t.Fatal(err)
			}
			got, want := map[string]string{}, map[string]string{}
			for _, f := range files {
				if filepath.Dir(f.path) != cm.dir {
					t.Errorf("path %s, want a name in %s", f.path, cm.dir)
				}
				got[filepath.Base(f.path)] = string(f.bin)
			}
			for name, b := range tc.want {
				want[name] = string(b)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("read %v, want %v", got, want)
			}
		})
	}
}
