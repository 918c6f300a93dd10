package wasm

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// watData encodes s as a WAT string literal, every byte escaped.
func watData(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "\\%02x", s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// constOutput returns a filter that replaces every event with out, or
// reports out as its error reason when verdict is 3.
func constOutput(out string, verdict int) string {
	call := "$set_output"
	if verdict == 3 {
		call = "$set_error"
	}
	return guest(fmt.Sprintf(`(call %s (i32.const 1024) (i32.const %d)) (i32.const %d)`, call, len(out), verdict),
		`(data (i32.const 1024) `+watData(out)+`)`)
}

const replacement = `{"specversion":"1.0","id":"x-1","source":"/filter","type":"com.vmware.event.router/event","subject":"Rewritten","data":{}}`

func TestVerdicts(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, src string
		verdict   filters.Verdict
		kind      string // error kind, for verdict Error
		msg       string
	}{
		{"pass", passWAT, filters.Pass, "", ""},
		{"drop", guest(`(i32.const 1)`, ""), filters.Drop, "", ""},
		{"replace", constOutput(replacement, 2), filters.Replace, "", ""},
		{"echo", guest(`(drop (call $read_event (i32.const 1024) (local.get $len)))
		    (call $set_output (i32.const 1024) (local.get $len)) (i32.const 2)`, ""), filters.Replace, "", ""},
		{"replace without output", guest(`(i32.const 2)`, ""), filters.Error, KindOutput, "without a call to evr.set_output"},
		{"replace with invalid event", constOutput(`{"id":"1"}`, 2), filters.Error, KindOutput, "specversion: required"},
		{"replace with garbage", constOutput(`not json`, 2), filters.Error, KindOutput, "not a JSON object"},
		{"output too large", guest(`(call $set_output (i32.const 0) (i32.const 2000000)) (i32.const 2)`, ""), filters.Error, KindOutput, "over the 1048576 byte limit"},
		{"error with reason", constOutput("vm name missing", 3), filters.Error, KindVerdict, "verdict 3 (error): vm name missing"},
		{"error without reason", guest(`(i32.const 3)`, ""), filters.Error, KindVerdict, "no reason given"},
		{"unknown verdict", guest(`(i32.const 7)`, ""), filters.Error, KindVerdict, "verdict 7 is not"},
		{"negative verdict", guest(`(i32.const -1)`, ""), filters.Error, KindVerdict, "verdict -1 is not"},
		{"config", guest(`(call $set_error (i32.const 0) (call $get_config (i32.const 0) (i32.const 100))) (i32.const 3)`, ""),
			filters.Error, KindVerdict, "error): drop VMs named test-*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-") + ".wasm"
			f := e.load(t, name, tc.src, opts(func(o *config.WasmFilter) { o.Config = "drop VMs named test-*" }))
			ev := event("VmPoweredOffEvent", "test-01")
			for range 3 { // the same instance serves several events
				r := f.Filter(context.Background(), ev)
				if r.Verdict != tc.verdict {
					t.Fatalf("verdict = %v (%v), want %v", r.Verdict, r.Err, tc.verdict)
				}
				switch tc.verdict {
				case filters.Replace:
					if r.Event == nil || r.Event.Key != ev.Key || r.Event.Entity != ev.Entity || !r.Event.Time.Equal(ev.Time) {
						t.Fatalf("replacement %+v does not keep the original's position and entity", r.Event)
					}
					if tc.name == "replace" && (r.Event.Subject != "Rewritten" || string(r.Event.JSON) != replacement) {
						t.Fatalf("replacement = %+v", r.Event)
					}
					if tc.name == "echo" && !bytes.Equal(r.Event.JSON, ev.JSON) {
						t.Fatalf("echo = %s", r.Event.JSON)
					}
				case filters.Error:
					contains(t, r.Err.Error(), tc.kind+": ")
					contains(t, r.Err.Error(), tc.msg)
				}
			}
			if tc.kind != "" {
				if got := testutil.ToFloat64(e.m.FilterErrors.WithLabelValues(name, tc.kind)); got != 3 {
					t.Fatalf("errors{kind=%s} = %v, want 3", tc.kind, got)
				}
			}
		})
	}
}

func TestRuntimeFailures(t *testing.T) {
	e := newEnv(t)
	// Each module fails on events larger than 1500 bytes and passes the
	// others, so the test can check that the next event flows.
	fail := func(body, extra string) string {
		return guest(`(if (i32.gt_u (local.get $len) (i32.const 1500)) (then `+body+`)) (i32.const 0)`, extra)
	}
	exitImport := `(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))`
	sleepImport := `(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))`
	for _, tc := range []struct {
		name, src, kind, msg string
	}{
		{"trap", fail(`unreachable`, ""), KindTrap, "unreachable"},
		{"division by zero", fail(`(drop (i32.div_u (i32.const 1) (i32.const 0)))`, ""), KindTrap, "divide by zero"},
		{"infinite loop", fail(`(loop $l (br $l))`, ""), KindTimeout, "did not return within 50ms"},
		{"endless recursion", fail(`(call $rec)`, `(func $rec (call $rec))`), KindStack, "call stack exhausted"},
		{"sleep", fail(`(i32.store (i32.const 16) (i32.const 1)) (i64.store (i32.const 24) (i64.const 3600000000000))
		    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))`, sleepImport), KindTimeout, "did not return"},
		{"proc_exit", fail(`(call $exit (i32.const 3))`, exitImport), KindExit, "proc_exit(3)"},
		{"proc_exit 0", fail(`(call $exit (i32.const 0))`, exitImport), KindExit, "proc_exit(0)"},
		{"memory exhausted", fail(`(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable`, ""), KindMemory, "out of memory"},
		{"read_event outside memory", fail(`(drop (call $read_event (i32.const 0x7fff0000) (local.get $len)))`, ""), KindTrap, "outside the module's memory"},
		{"set_output outside memory", fail(`(call $set_output (i32.const 0x7fff0000) (i32.const 100))`, ""), KindTrap, "outside the module's memory"},
		{"log outside memory", fail(`(call $log (i32.const 0) (i32.const -1) (i32.const 100))`, ""), KindTrap, "outside the module's memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-") + ".wasm"
			f := e.load(t, name, tc.src, opts(func(o *config.WasmFilter) {
				o.Timeout = 50 * time.Millisecond
				if tc.kind != KindTimeout {
					// Growing the stack to overflow takes a while on a
					// loaded machine: let it.
					o.Timeout = 10 * time.Second
				}
				o.PoolSize = 1
				o.MemoryLimit = 1 << 20
			}))
			small, big := event("VmPoweredOffEvent", "vm"), event("VmPoweredOffEvent", strings.Repeat("x", 1000))
			for i := range 2 {
				start := time.Now()
				r := f.Filter(context.Background(), big)
				if r.Verdict != filters.Error {
					t.Fatalf("round %d: verdict = %v, want error", i, r.Verdict)
				}
				contains(t, r.Err.Error(), tc.kind+": ")
				contains(t, r.Err.Error(), tc.msg)
				// The error goes into logs and dead letters: a recursion's
				// thousands of frames are cut to the top few.
				if n := strings.Count(r.Err.Error(), "\n"); n > maxTraceFrames+3 {
					t.Fatalf("error has %d lines, want at most %d:\n%.2000s", n+1, maxTraceFrames+4, r.Err)
				}
				if tc.kind == KindTimeout && time.Since(start) > 5*time.Second { // generous: no timing assert, only "bounded"
					t.Fatalf("a 50ms timeout took %s", time.Since(start))
				}
				// The instance was replaced: the next event flows.
				if r := f.Filter(context.Background(), small); r.Verdict != filters.Pass {
					t.Fatalf("round %d: after the failure, verdict = %v (%v), want pass", i, r.Verdict, r.Err)
				}
			}
			if got := testutil.ToFloat64(e.m.FilterErrors.WithLabelValues(name, tc.kind)); got != 2 {
				t.Fatalf("errors{kind=%s} = %v, want 2", tc.kind, got)
			}
		})
	}
}

func TestOnError(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		policy config.OnError
		want   filters.Verdict
	}{
		{config.OnErrorPass, filters.Pass},
		{config.OnErrorDrop, filters.Drop},
		{config.OnErrorDeadLetter, filters.Error},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			f := e.load(t, string(tc.policy)+".wasm", guest(`unreachable`, ""), opts(func(o *config.WasmFilter) { o.OnError = tc.policy }))
			if r := f.Filter(context.Background(), event("VmPoweredOffEvent", "vm")); r.Verdict != tc.want {
				t.Fatalf("verdict = %v, want %v", r.Verdict, tc.want)
			}
		})
	}
	contains(t, e.logs.String(), "filter error")
	contains(t, e.logs.String(), "kind=trap")
}

func TestErrorLogIsRateLimited(t *testing.T) {
	e := newEnv(t)
	f := e.load(t, "trap.wasm", guest(`unreachable`, ""), opts())
	for range 100 {
		f.Filter(context.Background(), event("VmPoweredOffEvent", "vm"))
	}
	if n := strings.Count(e.logs.String(), `msg="filter error"`); n > 20 {
		t.Fatalf("%d error lines for 100 errors, want rate-limited", n)
	}
	if got := testutil.ToFloat64(e.m.FilterErrors.WithLabelValues("trap.wasm", KindTrap)); got != 100 {
		t.Fatalf("errors = %v, want every one counted", got)
	}
}

func TestSandbox(t *testing.T) {
	e := newEnv(t)
	src := guest(`
	  ;; no preopened directory: fd_prestat_get(3) fails
	  (if (i32.eqz (call $prestat (i32.const 3) (i32.const 0))) (then (return (i32.const 10))))
	  ;; no environment variables
	  (drop (call $envsz (i32.const 0) (i32.const 4)))
	  (if (i32.load (i32.const 0)) (then (return (i32.const 11))))
	  ;; no arguments
	  (drop (call $argsz (i32.const 0) (i32.const 4)))
	  (if (i32.load (i32.const 0)) (then (return (i32.const 12))))
	  ;; no sockets
	  (if (i32.eqz (call $accept (i32.const 3) (i32.const 0) (i32.const 8))) (then (return (i32.const 13))))
	  ;; random and the real clock work
	  (if (call $random (i32.const 16) (i32.const 8)) (then (return (i32.const 14))))
	  (if (call $clock (i32.const 0) (i64.const 1) (i32.const 32)) (then (return (i32.const 15))))
	  (if (i64.lt_u (i64.load (i32.const 32)) (i64.const 1600000000000000000)) (then (return (i32.const 16))))
	  ;; stdout reaches the log
	  (i32.store (i32.const 64) (i32.const 2048)) (i32.store (i32.const 68) (i32.const 21))
	  (drop (call $write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 72)))
	  (call $log (i32.const 1) (i32.const 2100) (i32.const 13))
	  (i32.const 0)`, `
	  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
	  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $envsz (param i32 i32) (result i32)))
	  (import "wasi_snapshot_preview1" "args_sizes_get" (func $argsz (param i32 i32) (result i32)))
	  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
	  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
	  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
	  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
	  (data (i32.const 2048) "hello from the guest\n")
	  (data (i32.const 2100) "guest warning")`)
	f := e.load(t, "sandbox.wasm", src, opts())
	if r := f.Filter(context.Background(), event("VmPoweredOffEvent", "vm")); r.Verdict != filters.Pass {
		t.Fatalf("verdict = %v (%v), want pass", r.Verdict, r.Err)
	}
	logs := e.logs.String()
	contains(t, logs, `msg="guest output" filter=sandbox.wasm stream=stdout message="hello from the guest"`)
	contains(t, logs, `level=WARN msg="guest log" filter=sandbox.wasm message="guest warning"`)
}

func TestLoadRefuses(t *testing.T) {
	e := newEnv(t)
	markers := `(memory (export "memory") 1) (func (export "evr_abi_version_1"))`
	filterFn := `(func (export "evr_filter") (param i32) (result i32) (i32.const 0))`
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	wat := func(src string) []byte { return wasmtest.WAT(t, src) }
	for _, tc := range []struct {
		name string
		file string
		bin  []byte
		o    config.WasmFilter
		want string
	}{
		{"garbage", "garbage.wasm", []byte("this is not wasm"), opts(), "not a WebAssembly module"},
		{"empty", "empty.wasm", nil, opts(), "not a WebAssembly module"},
		{"not gzip", "x.wasm.gz", []byte("plain"), opts(), "not a gzip file"},
		{"gzip bomb", "bomb.wasm.gz", gz(make([]byte, MaxModuleSize+1)), opts(), "larger than 64 MiB"},
		{"no memory", "nomem.wasm", wat(`(module (func (export "evr_abi_version_1")) ` + filterFn + `)`), opts(),
			`missing export "memory"`},
		{"no abi marker", "nomarker.wasm", wat(`(module (memory (export "memory") 1) ` + filterFn + `)`), opts(),
			`missing export "evr_abi_version_1": want (func)`},
		{"abi version 2", "v2.wasm", wat(`(module (memory (export "memory") 1) (func (export "evr_abi_version_2")) ` + filterFn + `)`), opts(),
			"supports only ABI version 1"},
		{"no evr_filter", "nofilter.wasm", wat(`(module ` + markers + `)`), opts(),
			`missing export "evr_filter": want (func (param i32) (result i32))`},
		{"wrong signature", "sig.wasm", wat(`(module ` + markers + ` (func (export "evr_filter") (param i64) (result i32) (i32.const 0)))`), opts(),
			`export "evr_filter" has signature (func (param i64) (result i32)), want (func (param i32) (result i32))`},
		{"no result", "noresult.wasm", wat(`(module ` + markers + ` (func (export "evr_filter") (param i32)))`), opts(),
			`export "evr_filter" has signature (func (param i32)), want (func (param i32) (result i32))`},
		{"wrong evr_init", "init.wasm", wat(`(module ` + markers + filterFn + ` (func (export "evr_init")))`), opts(),
			`export "evr_init" has signature (func), want (func (result i32))`},
		{"unknown import", "abort.wasm", wat(`(module (import "env" "abort" (func (param i32 i32 i32 i32))) ` + markers + filterFn + `)`), opts(),
			`imports env.abort: filters may import only from "evr"`},
		{"unknown evr import", "fetch.wasm", wat(`(module (import "evr" "fetch" (func)) ` + markers + filterFn + `)`), opts(),
			`imports evr.fetch, which the router does not provide`},
		{"wrong evr import", "readsig.wasm", wat(`(module (import "evr" "read_event" (func (param i32) (result i32))) ` + markers + filterFn + `)`), opts(),
			`imports evr.read_event with signature (func (param i32) (result i32)), want (func (param i32 i32) (result i32))`},
		{"wrong wasi import", "wasisig.wasm", wat(`(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i64))) ` + markers + filterFn + `)`), opts(),
			`imports wasi_snapshot_preview1.proc_exit with signature`},
		{"imported memory", "impmem.wasm", wat(`(module (import "env" "memory" (memory 1)) (export "memory" (memory 0)) (func (export "evr_abi_version_1")) ` + filterFn + `)`), opts(),
			"imports memory env.memory: filters may import only functions"},
		{"command", "cmd.wasm", wat(`(module (memory (export "memory") 1) (func (export "_start")))`), opts(),
			"it is a WASI command, build a reactor"},
		{"evr_init refuses", "initfail.wasm", wat(`(module (import "evr" "set_error" (func $e (param i32 i32))) ` + markers + filterFn + `
		    (data (i32.const 0) "bad config") (func (export "evr_init") (result i32) (call $e (i32.const 0) (i32.const 10)) (i32.const 1)))`), opts(),
			"evr_init returned 1, refusing to load: bad config"},
		{"_initialize traps", "inittrap.wasm", wat(`(module ` + markers + filterFn + ` (func (export "_initialize") unreachable))`), opts(),
			"_initialize failed (trap)"},
		{"start loops", "startloop.wasm", wat(`(module ` + markers + filterFn + ` (func $s (loop (br 0))) (start $s))`),
			opts(func(o *config.WasmFilter) { o.Timeout = 10 * time.Millisecond }), "the start function did not return within 2s"},
		{"memory over limit", "bigmem.wasm", wat(`(module (memory (export "memory") 300) (func (export "evr_abi_version_1")) ` + filterFn + `)`), opts(),
			"initial memory of 300 pages (18.75MiB), over the memory limit of 256 pages (16MiB): raise memory_limit"},
		{"invalid code", "invalid.wasm", []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x0a\x05\x01\x03\x00\x41\x0b"), opts(),
			"not a valid WebAssembly module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, e.dir, tc.file, tc.bin)
			f, err := e.host.Load(context.Background(), path, tc.o)
			if err == nil {
				_ = f.Close()
				t.Fatal("Load succeeded")
			}
			contains(t, err.Error(), path+": ")
			contains(t, err.Error(), tc.want)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := e.host.Load(context.Background(), e.dir+"/nope.wasm", opts())
		contains(t, fmt.Sprint(err), "nope.wasm: open")
	})
}

func TestGzip(t *testing.T) {
	e := newEnv(t)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(wasmtest.WAT(t, guest(`(i32.const 1)`, ""))); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := e.host.Load(context.Background(), write(t, e.dir, "drop.wasm.gz", buf.Bytes()), opts())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if f.Name() != "drop.wasm.gz" {
		t.Fatalf("Name = %q", f.Name())
	}
	if r := f.Filter(context.Background(), event("VmPoweredOffEvent", "vm")); r.Verdict != filters.Drop {
		t.Fatalf("verdict = %v, want drop", r.Verdict)
	}
}

func TestConcurrentCalls(t *testing.T) {
	e := newEnv(t)
	echo := guest(`(drop (call $read_event (i32.const 1024) (local.get $len)))
	    (call $set_output (i32.const 1024) (local.get $len)) (i32.const 2)`, "")
	f := e.load(t, "echo.wasm", echo, opts(func(o *config.WasmFilter) { o.PoolSize = 3 }))
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ev := event("VmPoweredOffEvent", fmt.Sprintf("vm-%d-%d", g, i))
				r := f.Filter(context.Background(), ev)
				if r.Verdict != filters.Replace || !bytes.Equal(r.Event.JSON, ev.JSON) {
					t.Errorf("goroutine %d event %d: got %v %s", g, i, r.Verdict, r.Event.JSON)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestCloseWaitsForCallsAndServesLateOnes(t *testing.T) {
	e := newEnv(t)
	sleepy := guest(`(i32.store (i32.const 16) (i32.const 1)) (i64.store (i32.const 24) (i64.const 200000000))
	    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))) (i32.const 1)`,
		`(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))`)
	old := e.load(t, "f.wasm", sleepy, opts(func(o *config.WasmFilter) { o.Timeout = 5 * time.Second; o.PoolSize = 1 }))
	res := make(chan filters.Result, 1)
	go func() { res <- old.Filter(context.Background(), event("A", "vm")) }()
	// Wait until the call holds the only instance.
	eventually(t, "the call to start", func() bool { return len(old.pool) == 0 })
	_ = old.Close() // waits for the sleeping call
	// The call finished normally: Close did not close the instance under
	// it (the call would have failed).
	if r := <-res; r.Verdict != filters.Drop {
		t.Fatalf("in-flight call: verdict %v (%v), want drop", r.Verdict, r.Err)
	}
	if r := old.Filter(context.Background(), event("A", "vm")); r.Verdict != filters.Pass {
		t.Fatalf("late call: verdict %v, want pass", r.Verdict)
	}
}

func TestCanceledContextWhileWaiting(t *testing.T) {
	e := newEnv(t)
	f := e.load(t, "f.wasm", passWAT, opts(func(o *config.WasmFilter) { o.PoolSize = 1 }))
	in := <-f.pool // hold the only instance
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := f.Filter(ctx, event("A", "vm"))
	f.pool <- in
	if r.Verdict != filters.Error || r.Err != context.Canceled {
		t.Fatalf("got %v %v, want error context.Canceled", r.Verdict, r.Err)
	}
}

// instances counts the started instances of f.
func instances(f *Filter) int {
	f.host.wd.mu.Lock()
	defer f.host.wd.mu.Unlock()
	n := 0
	for in := range f.host.wd.insts {
		if in.f == f {
			n++
		}
	}
	return n
}

func TestPoolStartsOneInstanceAndGrowsOnDemand(t *testing.T) {
	e := newEnv(t)
	f := e.load(t, "pass.wasm", passWAT, opts(func(o *config.WasmFilter) { o.PoolSize = 3 }))
	if n := instances(f); n != 1 {
		t.Fatalf("%d instances after Load, want 1 (the others start when used)", n)
	}
	// Calls one at a time reuse the idle instance.
	for range 5 {
		if r := f.Filter(context.Background(), event("A", "vm")); r.Verdict != filters.Pass {
			t.Fatalf("verdict %v (%v)", r.Verdict, r.Err)
		}
	}
	if n := instances(f); n != 1 {
		t.Fatalf("%d instances after sequential calls, want 1", n)
	}
	// A call while the instance is busy starts a second one.
	in := <-f.pool
	if r := f.Filter(context.Background(), event("A", "vm")); r.Verdict != filters.Pass {
		t.Fatalf("verdict %v (%v)", r.Verdict, r.Err)
	}
	f.pool <- in
	if n := instances(f); n != 2 {
		t.Fatalf("%d instances after a concurrent call, want 2", n)
	}
}

// TestReplacementOutlivesCall: a replacement event keeps its own bytes
// when the instance serves the next call.
func TestReplacementOutlivesCall(t *testing.T) {
	e := newEnv(t)
	echo := guest(`(drop (call $read_event (i32.const 1024) (local.get $len)))
	    (call $set_output (i32.const 1024) (local.get $len)) (i32.const 2)`, "")
	f := e.load(t, "echo.wasm", echo, opts(func(o *config.WasmFilter) { o.PoolSize = 1 }))
	first := event("VmPoweredOffEvent", "vm-first")
	r1 := f.Filter(context.Background(), first)
	r2 := f.Filter(context.Background(), event("VmPoweredOnEvent", "vm-second-with-a-longer-name"))
	if r1.Verdict != filters.Replace || r2.Verdict != filters.Replace {
		t.Fatalf("verdicts %v (%v), %v (%v)", r1.Verdict, r1.Err, r2.Verdict, r2.Err)
	}
	if !bytes.Equal(r1.Event.JSON, first.JSON) {
		t.Fatalf("the first replacement changed under the second call: %s", r1.Event.JSON)
	}
}
