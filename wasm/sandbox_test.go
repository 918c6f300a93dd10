package wasm

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// pollImport is WASI's poll_oneoff, and sleepSub a clock subscription of
// 10 ms at address 0 (out at 64, nevents at 128): what Go's time.Sleep
// and C's nanosleep compile to.
const (
	pollImport = `(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))`
	sleepSub   = `(data (i32.const 24) "\80\96\98\00\00\00\00\00")` // 10,000,000 ns, relative, clock 0
	sleep10ms  = `(drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))`
)

// sleepLoopWAT is a retry loop that sleeps 10 ms per turn and never gives
// up: an ordinary bug.
var sleepLoopWAT = guest(`(loop $retry `+sleep10ms+` (br $retry)) (i32.const 0)`, pollImport+sleepSub)

// TestSleepLoopStopsAtDeadline: a guest that sleeps in a loop is stopped at
// its deadline: after the watchdog's interrupt, its next sleep traps. It
// used to run on until the fuel checkpoint, 4096 sleeps (41 s) later.
func TestSleepLoopStopsAtDeadline(t *testing.T) {
	e := newEnv(t)
	f := e.load(t, "sleeploop.wasm", sleepLoopWAT, opts(func(o *config.WasmFilter) { o.PoolSize = 1 }))
	for i := range 3 { // the replacement instance is stopped as well
		start := time.Now()
		r := f.Filter(context.Background(), event("VmPoweredOffEvent", "vm-1"))
		took := time.Since(start)
		if r.Verdict != filters.Error || !strings.Contains(r.Err.Error(), "timeout: did not return within 100ms") {
			t.Fatalf("call %d: verdict %v, err %v; want a timeout error", i, r.Verdict, r.Err)
		}
		// Generous: the point is seconds, not milliseconds.
		if took > 3*time.Second {
			t.Fatalf("call %d took %s with a 100ms timeout", i, took)
		}
	}
	if got := testutil.ToFloat64(e.m.FilterErrors.WithLabelValues("sleeploop.wasm", KindTimeout)); got != 3 {
		t.Fatalf("timeout errors = %v, want 3", got)
	}
}

// TestHostCallsTrapOnceStopped: every hookable host function traps as soon
// as the call is stopped, so no loop through the host outlives its
// deadline by more than one host call.
func TestHostCallsTrapOnceStopped(t *testing.T) {
	e := newEnv(t)
	f := e.load(t, "pass.wasm", passWAT, opts(func(o *config.WasmFilter) { o.PoolSize = 1 }))
	in := <-f.pool
	defer func() { f.pool <- in }()
	ctx := context.WithValue(context.Background(), instanceKey{}, in)
	hooks := map[string]func(){
		"nanosleep":      func() { in.sleep(int64(time.Hour)) },
		"nanotime":       func() { in.nanotime() },
		"walltime":       func() { in.walltime() },
		"sched_yield":    in.checkpoint,
		"random_get":     func() { _, _ = guardedReader{in, strings.NewReader("x")}.Read(make([]byte, 1)) },
		"fd_write":       func() { _, _ = guardedWriter{in, in.stdout}.Write([]byte("x\n")) },
		"evr.read_event": func() { hostReadEvent(ctx, in.mod, []uint64{0, 0}) },
		"evr.log":        func() { hostLog(ctx, in.mod, []uint64{0, 0, 0}) },
	}
	for name, hook := range hooks {
		t.Run(name, func(t *testing.T) {
			in.deadline.Store(claimed)
			defer in.deadline.Store(0)
			defer func() {
				if r := recover(); r == nil || !errors.Is(r.(error), errStopped) {
					t.Fatalf("recovered %v, want errStopped", r)
				}
			}()
			done := make(chan struct{})
			go func() { // a hook that blocks fails the test instead of hanging it
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					panic(name + " did not return once stopped")
				}
			}()
			defer close(done)
			hook()
		})
	}
}

// TestCloseInterruptsStuckCall: Close does not wait forever on a call that
// has no deadline to stop it.
func TestCloseInterruptsStuckCall(t *testing.T) {
	e := newEnv(t)
	f := e.load(t, "sleeploop.wasm", sleepLoopWAT, opts(func(o *config.WasmFilter) { o.PoolSize = 1; o.Timeout = 0 }))
	res := make(chan filters.Result, 1)
	go func() { res <- f.Filter(context.Background(), event("VmPoweredOffEvent", "vm-1")) }()
	eventually(t, "the call to start", func() bool { return len(f.pool) == 0 })
	closed := make(chan struct{})
	go func() { _ = f.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited on a stuck call")
	}
	if r := <-res; r.Verdict != filters.Error || !strings.Contains(r.Err.Error(), "timeout") {
		t.Fatalf("stuck call: verdict %v, err %v; want a timeout error", r.Verdict, r.Err)
	}
}

// TestGrowFailedResetPerCall: a guest that survives a failed memory.grow
// (it checks for -1) and traps in a later call is counted as a trap, not
// as out of memory.
func TestGrowFailedResetPerCall(t *testing.T) {
	e := newEnv(t)
	src := guest(`
    (if (i32.eqz (global.get $calls))
      (then
        (global.set $calls (i32.const 1))
        (return (i32.eq (memory.grow (i32.const 1000)) (i32.const -1)))))
    (unreachable)`, `(global $calls (mut i32) (i32.const 0))`)
	f := e.load(t, "grow.wasm", src, opts(func(o *config.WasmFilter) { o.PoolSize = 1; o.MemoryLimit = 1 << 20 }))
	ev := event("VmPoweredOffEvent", "vm-1")
	// verdict 1 (drop) says the grow failed and the guest carried on.
	if r := f.Filter(context.Background(), ev); r.Verdict != filters.Drop {
		t.Fatalf("first call: verdict %v (%v), want drop after a failed grow", r.Verdict, r.Err)
	}
	r := f.Filter(context.Background(), ev)
	if r.Verdict != filters.Error || !strings.HasPrefix(r.Err.Error(), KindTrap+":") {
		t.Fatalf("second call: verdict %v, err %v; want a trap", r.Verdict, r.Err)
	}
	if got := testutil.ToFloat64(e.m.FilterErrors.WithLabelValues("grow.wasm", KindMemory)); got != 0 {
		t.Fatalf("memory errors = %v, want 0", got)
	}
}

// TestGuestMemoryOutsideGoHeap: guest memories live in their own mappings,
// not in the Go heap, so a replaced instance's memory goes back to the
// system when it is closed, not at a later garbage collection (which let
// a guest failing on every event hold several times pool_size x
// memory_limit), and growing a memory never copies it.
func TestGuestMemoryOutsideGoHeap(t *testing.T) {
	e := newEnv(t)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	// Two instances of 16 MiB each, touched and then grown by a page.
	src := strings.Replace(guest(`
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 16646144))
    (drop (memory.grow (i32.const 1)))
    (i32.load8_u (i32.const 16711679))`, ""), `(memory (export "memory") 2)`, `(memory (export "memory") 254)`, 1)
	f := e.load(t, "big.wasm", src, opts(func(o *config.WasmFilter) { o.PoolSize = 2; o.Timeout = 10 * time.Second }))
	// Verdict = the last byte of the new page, which must read zero.
	if r := f.Filter(context.Background(), event("VmPoweredOffEvent", "vm-1")); r.Verdict != filters.Pass {
		t.Fatalf("verdict %v (%v), want pass: the grown page does not read zero", r.Verdict, r.Err)
	}
	if grew := int64(heap()) - int64(before); grew > 8<<20 {
		t.Fatalf("Go heap grew by %d MiB with 32 MiB of guest memory", grew>>20)
	}
}

// TestWatchdogParksWhenIdle: with no call in flight the watchdog stops
// ticking (an idle router with filters loaded is not woken every tick),
// and a call that begins while it is parked is still stopped at its
// deadline.
func TestWatchdogParksWhenIdle(t *testing.T) {
	e := newEnv(t)
	spin := e.load(t, "spin.wasm", guest(`(loop $l (br $l)) (i32.const 0)`, ""), opts(func(o *config.WasmFilter) { o.PoolSize = 1 }))
	pass := e.load(t, "pass.wasm", passWAT, opts(func(o *config.WasmFilter) { o.PoolSize = 1 }))
	wd := e.host.wd
	for i := range 3 {
		eventually(t, "the watchdog to park with no call in flight", wd.parked.Load)
		if r := pass.Filter(context.Background(), event("VmPoweredOffEvent", "vm-1")); r.Verdict != filters.Pass {
			t.Fatalf("round %d: pass filter: verdict %v, err %v", i, r.Verdict, r.Err)
		}
		eventually(t, "the watchdog to park again", wd.parked.Load)
		done := make(chan filters.Result, 1)
		go func() { done <- spin.Filter(context.Background(), event("VmPoweredOffEvent", "vm-1")) }()
		select {
		case r := <-done:
			if r.Verdict != filters.Error || !strings.Contains(r.Err.Error(), "timeout: did not return within 100ms") {
				t.Fatalf("round %d: spin filter: verdict %v, err %v; want a timeout error", i, r.Verdict, r.Err)
			}
		case <-time.After(10 * time.Second): // generous: a watchdog left parked never stops it
			t.Fatalf("round %d: the spinning call was not stopped within 10 s (timeout 100ms)", i)
		}
		if n := wd.busy.Load(); n != 0 {
			t.Fatalf("round %d: %d calls counted in flight after they returned", i, n)
		}
	}
}
