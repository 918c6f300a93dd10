package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// Benchmarks (figures in the README):
//
//	go test -run '^$' -bench . -benchmem -cpu 1 ./wasm/

// benchModes are the deadline mechanisms compared. The timeout does not
// change what a call costs; it is long so that a loaded machine (the
// benchmark pauses for other processes) does not time calls out.
var benchModes = []struct {
	name    string
	mode    deadlineMode
	timeout time.Duration
}{
	{"no-deadline", deadlineInterrupt, 0},
	{"deadline=watchdog", deadlineInterrupt, 10 * time.Second},
	{"deadline=wazero-ctx-per-call", deadlinePerCall, 10 * time.Second},
	{"deadline=wazero-ctx-watchdog", deadlineContextWatchdog, 10 * time.Second},
}

func benchHost(b *testing.B, mode deadlineMode) *Host {
	h, err := NewHost(HostOptions{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	h.mode = mode
	b.Cleanup(func() { _ = h.Close() })
	return h
}

func benchFilter(b *testing.B, h *Host, name string, bin []byte, o config.WasmFilter) *Filter {
	f, err := h.Load(context.Background(), write(b, b.TempDir(), name, bin), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.Close() })
	return f
}

func benchChain(fs ...filters.Filter) *filters.Chain {
	c := filters.NewChain(filters.NewRouting(allSubscribed{}), slog.New(slog.DiscardHandler), metrics.New())
	c.SetUserFilters(fs)
	return c
}

// BenchmarkChainPass is the per-event cost of the chain with one WAT filter
// that passes every event without reading it, by deadline mechanism;
// "no-filter" is the chain with only the built-in routing filter.
func BenchmarkChainPass(b *testing.B) {
	bin := wasmtest.WAT(b, passWAT)
	ev := event("VmPoweredOffEvent", "vm-1")
	b.Run("no-filter", func(b *testing.B) {
		c := benchChain()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Run(context.Background(), ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			f := benchFilter(b, benchHost(b, m.mode), "pass.wasm", bin, opts(func(o *config.WasmFilter) { o.Timeout = m.timeout }))
			c := benchChain(f)
			b.ReportAllocs()
			for b.Loop() {
				if out, err := c.Run(context.Background(), ev); out == nil || err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// loopWAT spins 10,000 iterations per event: what a deadline mechanism
// costs a guest that computes.
var loopWAT = guest(`(local $i i32)
  (loop $l
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
  (i32.const 0)`, "")

// BenchmarkGuestLoop compares a computing guest under each deadline
// mechanism with the same module run by bare wazero (no instrumentation, no
// deadline).
func BenchmarkGuestLoop(b *testing.B) {
	bin := wasmtest.WAT(b, loopWAT)
	ev := event("VmPoweredOffEvent", "vm-1")
	b.Run("bare-wazero", func(b *testing.B) {
		ctx := context.Background()
		r := wazero.NewRuntime(ctx)
		defer func() { _ = r.Close(ctx) }()
		stubHostModule(b, r)
		mod, err := r.Instantiate(ctx, bin)
		if err != nil {
			b.Fatal(err)
		}
		fn := mod.ExportedFunction("evr_filter")
		stack := []uint64{0}
		for b.Loop() {
			stack[0] = 100
			if err := fn.CallWithStack(ctx, stack); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			f := benchFilter(b, benchHost(b, m.mode), "loop.wasm", bin, opts(func(o *config.WasmFilter) { o.Timeout = m.timeout }))
			for b.Loop() {
				if r := f.Filter(context.Background(), ev); r.Verdict != filters.Pass {
					b.Fatal(r.Err)
				}
			}
		})
	}
}

// BenchmarkChainSubjectRewrite runs the C example subject-map through the
// whole chain: every event is rewritten, validated and handed on.
func BenchmarkChainSubjectRewrite(b *testing.B) {
	bin := readFile(b, filepath.Join(examplesDir(b), "subject-map", "subject-map.wasm"))
	f := benchFilter(b, benchHost(b, deadlineInterrupt), "subject-map.wasm", bin,
		opts(func(o *config.WasmFilter) { o.Config = "VmPoweredOffEvent=VmStopped"; o.Timeout = 10 * time.Second }))
	c := benchChain(f)
	ev := event("VmPoweredOffEvent", "vm-1")
	b.ReportAllocs()
	start, cpu := time.Now(), cpuTime()
	for b.Loop() {
		out, err := c.Run(context.Background(), ev)
		if err != nil || out.Subject != "VmStopped" {
			b.Fatalf("out %v, err %v", out, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	// On a shared machine wall time includes waiting for a core; events
	// per CPU-second (the process's, GC included) is the one-core figure.
	b.ReportMetric(float64(b.N)/(cpuTime()-cpu).Seconds(), "events/cpu-s")
}

// BenchmarkChainReadReplace is what a read+replace filter adds to an
// event's cost (issue 16 item 3): the chain without a user filter, then
// with a C filter that rewrites the subject (to the same value, so every
// event is replaced) and a Go SDK filter that adds an extension attribute.
// cpu-us/event is the process's CPU time per event, GC included, the
// figure a burst costs the router.
//
//	go test -run '^$' -bench ChainReadReplace -benchmem -cpu 1 -count 5 ./wasm/
func BenchmarkChainReadReplace(b *testing.B) {
	ev := event("VmPoweredOnEvent", "vm-1")
	run := func(b *testing.B, c *filters.Chain, check func(*gateway.Event) bool) {
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			out, err := c.Run(context.Background(), ev)
			if err != nil || !check(out) {
				b.Fatalf("out %v, err %v", out, err)
			}
		}
		b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/1000/float64(b.N), "cpu-us/event")
	}
	b.Run("no-filter", func(b *testing.B) {
		run(b, benchChain(), func(out *gateway.Event) bool { return out == ev })
	})
	b.Run("c-subject-map", func(b *testing.B) {
		bin := readFile(b, filepath.Join(examplesDir(b), "subject-map", "subject-map.wasm"))
		f := benchFilter(b, benchHost(b, deadlineInterrupt), "subject-map.wasm", bin,
			opts(func(o *config.WasmFilter) {
				o.Config = "VmPoweredOnEvent=VmPoweredOnEvent"
				o.Timeout = 10 * time.Second
			}))
		run(b, benchChain(f), func(out *gateway.Event) bool { return out != ev && out.Subject == "VmPoweredOnEvent" })
	})
	b.Run("go-add-extension", func(b *testing.B) {
		bin := wasmtest.GoPackage(b, filepath.Join("testdata", "go-add-extension"))
		f := benchFilter(b, benchHost(b, deadlineInterrupt), "go-add-extension.wasm", bin,
			opts(func(o *config.WasmFilter) { o.Timeout = 10 * time.Second }))
		run(b, benchChain(f), func(out *gateway.Event) bool {
			return out != ev && bytes.Contains(out.JSON, []byte(`"team":"ops"`))
		})
	})
}

// cpuTime is the CPU time the process has used (user + system, all
// threads).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGoColdLoad is a Go filter's start with the default pool_size
// (2): a new host, compile (from the on-disk cache a previous start
// filled, or from scratch), and the filter ready for its first event (issue
// 16 item 5: target <= 50 ms from the disk cache). "wazero-only" is what
// wazero does on the same load path, with the same rewritten bytes and the
// same cache file: the floor the router cannot go under without changing
// wazero.
//
//	go test -run '^$' -bench 'GoColdLoad/(disk-cache|wazero-only)' -benchtime 10x -count 3 ./wasm/
func BenchmarkGoColdLoad(b *testing.B) {
	bin := wasmtest.GoPackage(b, filepath.Join(examplesDir(b), "go-drop-test-vms"))
	path := write(b, b.TempDir(), "go-drop-test-vms.wasm", bin)
	o := opts(func(o *config.WasmFilter) { o.PoolSize = 2 })
	load := func(b *testing.B, cacheDir string) {
		h, err := NewHost(HostOptions{CacheDir: cacheDir, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		f, err := h.Load(context.Background(), path, o)
		if err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
		_ = h.Close()
	}
	// The cache both sub-benchmarks read, filled by the router's load.
	cacheDir := b.TempDir()
	load(b, cacheDir)
	cached := cacheFiles(b, cacheDir)
	b.Run("disk-cache", func(b *testing.B) {
		coldLoop(b, func() { load(b, cacheDir) })
	})
	b.Run("wazero-only", func(b *testing.B) {
		pages := memoryLimitPages(o.MemoryLimit)
		out, err := instrument.Rewrite(bin, instrument.Options{MemoryLimitPages: pages})
		if err != nil {
			b.Fatal(err)
		}
		coldLoop(b, func() { wazeroLoad(b, cacheDir, out.Binary, pages) })
		// A cache miss would have compiled (seconds, not milliseconds) and
		// written a second file: then this was not the router's work.
		if got := cacheFiles(b, cacheDir); got != cached {
			b.Fatalf("wazero-only missed the router's cache: %d files, want %d", got, cached)
		}
	})
	b.Run("no-cache", func(b *testing.B) {
		for b.Loop() {
			load(b, "")
		}
	})
}

// coldLoop runs load b.N times and reports its CPU time per load (the
// process's, GC included) beside the wall time, and the page faults it
// took: on a VM each costs microseconds of system time, a large part of a
// load's CPU.
func coldLoop(b *testing.B, load func()) {
	b.ReportAllocs()
	var cpu time.Duration
	var faults int64
	for b.Loop() {
		c, f := cpuTime(), pageFaults()
		load()
		cpu += cpuTime() - c
		faults += pageFaults() - f
	}
	perLoad := float64(cpu.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(perLoad, "cpu-ms/op")
	b.ReportMetric(float64(faults)/float64(b.N), "faults/op")
	verdict := "met"
	if perLoad > 50 {
		verdict = "missed"
	}
	// For wazero-only this says whether the target is reachable at all.
	b.Logf("issue 16 target: a cold load ≤ 50 ms: %s (%.1f ms CPU per load)", verdict, perLoad)
}

// pageFaults is the number of minor page faults the process has taken.
func pageFaults() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Minflt
}

// wazeroLoad is Host.Load's wazero calls, without the router's own work
// (reading the file, the rewrite, the ABI checks, the watchdog, logging):
// a runtime with the same configuration and a new cache on dir, WASI and
// an "evr" host module (stubs: the guest's start-up calls only get_config,
// which returns nothing, as the router's does for an empty config), the
// compile, and one instance, configured and started as newInstance does.
func wazeroLoad(b *testing.B, dir string, rewritten []byte, pages uint32) {
	ctx := context.Background()
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cache.Close(ctx) }()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCompilationCache(cache).WithMemoryLimitPages(pages).WithCloseOnContextDone(false))
	defer func() { _ = rt.Close(ctx) }()
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		b.Fatal(err)
	}
	stubHostModule(b, rt)
	cm, err := rt.CompileModule(ctx, rewritten)
	if err != nil {
		b.Fatal(err)
	}
	mc := wazero.NewModuleConfig().WithName("").WithStartFunctions().
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().WithOsyield(func() {}).
		WithRandSource(rand.Reader).WithStdout(io.Discard).WithStderr(io.Discard)
	mod, err := rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, guestMemory), cm, mc)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{instrument.StartExport, exportInitialize, exportInit} {
		if fn := mod.ExportedFunction(name); fn != nil {
			if res, err := fn.Call(ctx); err != nil || (name == exportInit && res[0] != 0) {
				b.Fatalf("%s: %v %v", name, res, err)
			}
		}
	}
}

// stubHostModule instantiates an "evr" module in rt whose functions
// return 0.
func stubHostModule(b *testing.B, rt wazero.Runtime) {
	stub := api.GoModuleFunc(func(_ context.Context, _ api.Module, stack []uint64) {
		if len(stack) > 0 {
			stack[0] = 0
		}
	})
	host := rt.NewHostModuleBuilder(hostModule)
	for name, sig := range hostFunctions {
		host.NewFunctionBuilder().WithGoModuleFunction(stub, sig.params, sig.results).Export(name)
	}
	if _, err := host.Instantiate(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// cacheFiles counts the files under wazero's cache directory.
func cacheFiles(b *testing.B, dir string) int {
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkDeadlineOverrun measures how late a call that never returns by
// itself comes back, past its 100ms timeout (the README's figure; the
// bound is ~2 x timeout + 50 ms on 2 busy cores):
//
//	go test -run '^$' -bench DeadlineOverrun -benchtime 20x ./wasm/
func BenchmarkDeadlineOverrun(b *testing.B) {
	const timeout = 100 * time.Millisecond
	for _, g := range []struct{ name, src string }{
		{"spin", guest(`(loop $l (br $l)) (i32.const 0)`, "")},
		{"sleep-loop", sleepLoopWAT},
		{"memory.fill-loop", guest(`(loop $l (memory.fill (i32.const 0) (i32.const 0) (i32.const 16711680)) (br $l)) (i32.const 0)`, "")},
	} {
		b.Run(g.name, func(b *testing.B) {
			bin := wasmtest.WAT(b, strings.Replace(g.src, `(memory (export "memory") 2)`, `(memory (export "memory") 255)`, 1))
			f := benchFilter(b, benchHost(b, deadlineInterrupt), "overrun.wasm", bin,
				opts(func(o *config.WasmFilter) { o.Timeout = timeout; o.PoolSize = 1 }))
			ev := event("VmPoweredOffEvent", "vm-1")
			var worst, total time.Duration
			for b.Loop() {
				start := time.Now()
				if r := f.Filter(context.Background(), ev); r.Verdict != filters.Error {
					b.Fatalf("verdict %v, want a timeout error", r.Verdict)
				}
				late := time.Since(start) - timeout
				worst, total = max(worst, late), total+late
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "late-ms/op")
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-late-ms")
		})
	}
}
