package instrument_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

func instantiate(t *testing.T, bin []byte, opts instrument.Options) (api.Module, *instrument.Output) {
	t.Helper()
	out, err := instrument.Rewrite(bin, opts)
	if err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	ctx := context.Background()
	rc := wazero.NewRuntimeConfig()
	if opts.MemoryLimitPages > 0 {
		rc = rc.WithMemoryLimitPages(opts.MemoryLimitPages)
	}
	r := wazero.NewRuntimeWithConfig(ctx, rc)
	t.Cleanup(func() { _ = r.Close(ctx) })
	mod, err := r.InstantiateWithConfig(ctx, out.Binary, wazero.NewModuleConfig().WithStartFunctions())
	if err != nil {
		t.Fatalf("instantiate rewritten module: %v", err)
	}
	return mod, out
}

func TestInterruptStopsLoopsAndRecursion(t *testing.T) {
	bin := wasmtest.WAT(t, `(module
	  (func (export "spin") (loop $l (br $l)))
	  (func $fib (export "fib") (param i32) (result i32)
	    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
	      (then (local.get 0))
	      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
	                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
	  (func (export "count") (param i32) (result i32) (local i32)
	    (loop $l (local.set 1 (i32.add (local.get 1) (i32.const 1)))
	      (br_if $l (i32.lt_u (local.get 1) (local.get 0))))
	    (local.get 1)))`)
	mod, _ := instantiate(t, bin, instrument.Options{})
	g := mod.ExportedGlobal(instrument.InterruptExport).(api.MutableGlobal)

	// Without the flag, code runs normally.
	res, err := mod.ExportedFunction("count").Call(context.Background(), 1000)
	if err != nil || res[0] != 1000 {
		t.Fatalf("count = %v, %v; want 1000", res, err)
	}
	for _, tc := range []struct {
		name string
		args []uint64
	}{{"spin", nil}, {"fib", []uint64{60}}} {
		t.Run(tc.name, func(t *testing.T) {
			g.Set(0)
			done := make(chan error, 1)
			go func() {
				_, err := mod.ExportedFunction(tc.name).Call(context.Background(), tc.args...)
				done <- err
			}()
			// The guest is running (or about to): set the flag and
			// expect the call to trap.
			g.Set(1)
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "unreachable") {
					t.Fatalf("err = %v, want an unreachable trap", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("guest was not interrupted within 10s")
			}
		})
	}
}

func TestGrowFailureIsFlagged(t *testing.T) {
	bin := wasmtest.WAT(t, `(module (memory 1)
	  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))`)
	mod, _ := instantiate(t, bin, instrument.Options{MemoryLimitPages: 4})
	grow := mod.ExportedFunction("grow")
	flag := mod.ExportedGlobal(instrument.GrowFailedExport)
	if res, err := grow.Call(context.Background(), 2); err != nil || res[0] != 1 {
		t.Fatalf("grow(2) = %v, %v; want old size 1", res, err)
	}
	if flag.Get() != 0 {
		t.Fatal("flag set after a successful grow")
	}
	if res, err := grow.Call(context.Background(), 2); err != nil || int32(res[0]) != -1 {
		t.Fatalf("grow(2) past the limit = %v, %v; want -1", res, err)
	}
	if flag.Get() != 1 {
		t.Fatal("flag not set after a failed grow")
	}
}

func TestStartMovedToExport(t *testing.T) {
	bin := wasmtest.WAT(t, `(module (global $g (export "g") (mut i32) (i32.const 0))
	  (func $s (global.set $g (i32.const 7))) (start $s))`)
	mod, out := instantiate(t, bin, instrument.Options{})
	if !out.HasStart {
		t.Fatal("HasStart = false")
	}
	if got := mod.ExportedGlobal("g").Get(); got != 0 {
		t.Fatalf("start ran during instantiation: g = %d", got)
	}
	if _, err := mod.ExportedFunction(instrument.StartExport).Call(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := mod.ExportedGlobal("g").Get(); got != 7 {
		t.Fatalf("g = %d after start, want 7", got)
	}
}

func TestMemoryLimits(t *testing.T) {
	for _, tc := range []struct {
		name, mem string
		wantErr   string
		wantMax   uint32
	}{
		{"max capped", "(memory 1 100)", "", 4 * instrument.PageSize},
		{"no max", "(memory 1)", "", 0},
		{"min over limit", "(memory 5)", "initial memory of 5 pages (320KiB), over the memory limit of 4 pages (256KiB)", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := wasmtest.WAT(t, "(module "+tc.mem+` (export "memory" (memory 0)))`)
			if tc.wantErr != "" {
				_, err := instrument.Rewrite(bin, instrument.Options{MemoryLimitPages: 4})
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			mod, _ := instantiate(t, bin, instrument.Options{MemoryLimitPages: 4})
			if max, ok := mod.Memory().Definition().Max(); tc.wantMax != 0 && (!ok || max*instrument.PageSize != tc.wantMax) {
				t.Fatalf("max = %d, %v; want %d bytes", max, ok, tc.wantMax)
			}
		})
	}
}

func TestRefusesMalformed(t *testing.T) {
	valid := wasmtest.WAT(t, `(module (func (export "f") (loop (br 0))))`)
	for _, tc := range []struct {
		name string
		bin  []byte
		want string
	}{
		{"empty", nil, "not a WebAssembly module"},
		{"text", []byte("hello, world"), "not a WebAssembly module"},
		{"component", []byte("\x00asm\x0d\x00\x01\x00"), "component"},
		{"truncated", valid[:len(valid)-3], ""},
		{"reserved export", wasmtest.WAT(t, `(module (global (export "__evr_x") i32 (i32.const 0)))`), "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := instrument.Rewrite(tc.bin, instrument.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// coverage exercises every kind of immediate the rewriter must skip.
const coverage = `(module
  (type $t (func (param i32) (result i32)))
  (import "env" "f" (func $imp (param i32) (result i32)))
  (import "env" "g" (global $ig i32))
  (memory 1) (table $tab 2 funcref) (elem (i32.const 0) func $imp $f)
  (data $d "abc")
  (global $mg (mut i64) (i64.const -5))
  (func $f (type $t) (local f32 f64 v128)
    (block $b
      (loop $l
        (br_table $b $l $b (local.get 0))))
    (if (local.get 0) (then (nop)) (else (nop)))
    (local.set 1 (f32.const 1.5)) (local.set 2 (f64.const -2.25))
    (local.set 3 (v128.const i32x4 1 2 3 4))
    (local.set 3 (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 (local.get 3) (local.get 3)))
    (drop (i32x4.extract_lane 2 (local.get 3)))
    (local.set 3 (v128.load offset=4 (i32.const 0)))
    (local.set 3 (v128.load8_lane 3 (i32.const 0) (local.get 3)))
    (local.set 3 (v128.load32_zero (i32.const 0)))
    (drop (i32.trunc_sat_f32_s (local.get 1)))
    (memory.init $d (i32.const 0) (i32.const 0) (i32.const 1))
    (data.drop $d)
    (memory.copy (i32.const 0) (i32.const 1) (i32.const 1))
    (memory.fill (i32.const 0) (i32.const 0) (i32.const 1))
    (drop (table.size $tab))
    (drop (ref.is_null (ref.func $f)))
    (drop (ref.null func))
    (drop (select (result i32) (i32.const 1) (i32.const 2) (local.get 0)))
    (i64.store offset=8 align=4 (i32.const 0) (global.get $mg))
    (drop (memory.grow (i32.const 0)))
    (drop (memory.size))
    (drop (i32.extend8_s (global.get $ig)))
    (drop (call_indirect (type $t) (i32.const 0) (i32.const 1)))
    (call $imp (local.get 0)))
  (export "f" (func $f)))`
