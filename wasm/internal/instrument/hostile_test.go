package instrument_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// TestHiddenInstructions feeds the rewriter modules whose bytes decode
// differently with a careless decoder than with wazero's, each hiding a
// global.set of the router's interrupt flag (global 1: the module has one
// global of its own). Rewrite must refuse them, or else the flag must be
// untouched after the call.
func TestHiddenInstructions(t *testing.T) {
	zeros := make([]byte, 16)
	for _, tc := range []struct {
		name string
		code []byte
	}{
		{
			// wazero reads the SIMD sub-opcode as one byte: 0xfd 0x8c is
			// i16x8.shr_s and 0x00 unreachable; read as a LEB128, 0x8c 0x00
			// is v128.const, whose 16 "immediate" bytes wazero executes.
			name: "simd sub-opcode as LEB128",
			code: cat([]byte{0x41, 0, 0x04, 0x40, 0xfd, 0x0c}, zeros, []byte{0x41, 0, 0xfd, 0x8c, 0x00},
				[]byte{0x0b, 0x41, 1, 0x24, 1, 0x02, 0x40, 1, 1, 1, 1, 1, 1, 1, 1, 1},
				[]byte{0x0b, 0x0b}),
		},
		{
			// wazero stops reading a block type at the fifth byte even when
			// it has the continuation bit; the next byte is an instruction.
			// Here block type 1, (i32) -> (), takes the i32 global.set stores.
			name: "block type of five bytes and a continuation bit",
			code: []byte{0x41, 1, 0x02, 0x81, 0x80, 0x80, 0x80, 0x80, 0x24, 1, 0x0b, 0x0b},
		},
		{
			name: "overlong global index",
			code: []byte{0x41, 1, 0x24, 0x81, 0x80, 0x80, 0x80, 0x10, 0x0b},
		},
		{
			name: "memory.fill index of two bytes",
			code: []byte{0x41, 0, 0x41, 0, 0x41, 0, 0xfc, 11, 0x80, 0x00, 0x41, 1, 0x24, 1, 0x0b},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := wasmModule(
				sec(1, vec(fn(nil, nil), fn([]byte{0x7f}, nil))),
				sec(3, vec(u32(0))),
				sec(5, vec([]byte{0, 1})),
				sec(6, vec(mutI32)),
				sec(7, vec(exportFunc("f", 0))),
				sec(10, vec(body(tc.code...))),
			)
			out, err := instrument.Rewrite(bin, instrument.Options{})
			if err == nil {
				if flag := callAndReadFlag(t, out.Binary); flag != 0 {
					t.Fatalf("the guest set %s to %d", instrument.InterruptExport, flag)
				}
				t.Fatal("Rewrite accepted a module that hides instructions")
			}
			t.Logf("refused: %v", err)
		})
	}
}

// callAndReadFlag instantiates bin, calls its export "f" and returns the
// interrupt flag.
func callAndReadFlag(t *testing.T, bin []byte) uint64 {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer func() { _ = r.Close(ctx) }()
	mod, err := r.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithStartFunctions())
	if err != nil {
		t.Logf("the rewrite does not instantiate: %v", err)
		return 0
	}
	_, _ = mod.ExportedFunction("f").Call(ctx)
	return mod.ExportedGlobal(instrument.InterruptExport).Get()
}

func TestStackBudget(t *testing.T) {
	bin := wasmtest.WAT(t, `(module
	  (func $rec (export "rec") (param i32) (result i32)
	    (if (result i32) (i32.eqz (local.get 0))
	      (then (i32.const 0))
	      (else (i32.add (i32.const 1) (call $rec (i32.sub (local.get 0) (i32.const 1)))))))
	  (func $fat (export "fat") (param i32) (result i32) (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64
	      i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64
	      v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128)
	    (if (result i32) (i32.eqz (local.get 0))
	      (then (i32.const 0))
	      (else (i32.add (i32.const 1) (call $fat (i32.sub (local.get 0) (i32.const 1)))))))
	  ;; Every way out of a function must release its frame: calling these
	  ;; many times more than the budget holds frames proves it.
	  (func (export "ret") (param i32) (result i32) (return (local.get 0)))
	  (func (export "br") (param i32) (result i32) (local.get 0) (br 0))
	  (func (export "br_if") (param i32) (result i32)
	    (block (drop (br_if 1 (local.get 0) (local.get 0)))) (i32.const 7))
	  (func (export "br_table") (param i32) (result i32)
	    (block (result i32) (br_table 0 1 (local.get 0) (local.get 0))))
	  (func (export "multi") (param i32) (result i32)
	    (call $two (local.get 0)) (drop))
	  (func $two (param i32) (result i32 i32)
	    (local.get 0) (local.get 0) (br_if 0 (local.get 0)) (return)))`)
	mod, _ := instantiate(t, bin, instrument.Options{})
	ctx := context.Background()
	exhausted := mod.ExportedGlobal(instrument.StackExhaustedExport).(api.MutableGlobal)

	for _, name := range []string{"ret", "br", "br_if", "br_table", "multi"} {
		t.Run("release/"+name, func(t *testing.T) {
			fn := mod.ExportedFunction(name)
			for i := 0; i < 2*instrument.StackBudget/instrument.FrameSlots; i++ {
				if _, err := fn.Call(ctx, uint64(i%2)); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
		})
	}

	// A recursion within the budget returns; deeper, it traps with the
	// flag set. A fat frame counts its locals.
	for _, tc := range []struct {
		name    string
		fits    uint64
		exceeds uint64
	}{
		{"rec", 10000, 20000},
		{"fat", 1000, 4000},
	} {
		t.Run("depth/"+tc.name, func(t *testing.T) {
			exhausted.Set(0)
			fn := mod.ExportedFunction(tc.name)
			if res, err := fn.Call(ctx, tc.fits); err != nil || res[0] != tc.fits {
				t.Fatalf("%s(%d) = %v, %v", tc.name, tc.fits, res, err)
			}
			if exhausted.Get() != 0 {
				t.Fatal("flag set by a recursion within the budget")
			}
			_, err := fn.Call(ctx, tc.exceeds)
			if err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("%s(%d): err = %v, want an unreachable trap", tc.name, tc.exceeds, err)
			}
			if exhausted.Get() != 1 {
				t.Fatalf("%s = %d after the trap, want 1", instrument.StackExhaustedExport, exhausted.Get())
			}
		})
	}
}

// TestAddedGlobalsAreResettable checks that the host can reset each flag
// before a call: all are mutable.
func TestAddedGlobalsAreResettable(t *testing.T) {
	mod, _ := instantiate(t, wasmtest.WAT(t, `(module (memory 1))`), instrument.Options{})
	for _, name := range []string{instrument.InterruptExport, instrument.GrowFailedExport, instrument.StackExhaustedExport} {
		g, ok := mod.ExportedGlobal(name).(api.MutableGlobal)
		if !ok {
			t.Fatalf("%s is not a mutable global", name)
		}
		g.Set(1)
		g.Set(0)
		if g.Get() != 0 {
			t.Fatalf("%s = %d after reset", name, g.Get())
		}
	}
}

// TestBulkInstructionsCheckInterrupt sets the interrupt flag before calling
// a function whose first instruction that can run long is a bulk memory or
// table instruction: it must trap before the instruction, so the marker
// global stays 0.
func TestBulkInstructionsCheckInterrupt(t *testing.T) {
	for _, tc := range []struct{ name, code string }{
		{"memory.fill", `(memory.fill (i32.const 0) (i32.const 1) (i32.const 65536))`},
		{"memory.copy", `(memory.copy (i32.const 0) (i32.const 1) (i32.const 100))`},
		{"memory.init", `(memory.init $d (i32.const 0) (i32.const 0) (i32.const 3))`},
		{"table.fill", `(table.fill $t (i32.const 0) (ref.null func) (i32.const 2))`},
		{"table.copy", `(table.copy $t $t (i32.const 0) (i32.const 1) (i32.const 1))`},
		{"table.init", `(table.init $t $e (i32.const 0) (i32.const 0) (i32.const 1))`},
		{"table.grow", `(drop (table.grow $t (ref.null func) (i32.const 1)))`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := wasmtest.WAT(t, `(module (memory 1) (table $t 4 funcref) (data $d "abc")
			  (func $g) (elem $e func $g)
			  (global $marker (export "marker") (mut i32) (i32.const 0))
			  (func (export "f") `+tc.code+` (global.set $marker (i32.const 1))))`)
			mod, _ := instantiate(t, bin, instrument.Options{})
			f := mod.ExportedFunction("f")
			if _, err := f.Call(context.Background()); err != nil {
				t.Fatalf("without the flag: %v", err)
			}
			marker := mod.ExportedGlobal("marker").(api.MutableGlobal)
			marker.Set(0)
			mod.ExportedGlobal(instrument.InterruptExport).(api.MutableGlobal).Set(1)
			_, err := f.Call(context.Background())
			if err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("err = %v, want an unreachable trap", err)
			}
			if marker.Get() != 0 {
				t.Fatal("the instruction ran with the interrupt flag set")
			}
		})
	}
}

// TestBulkLoopStops interrupts a guest that fills its whole memory in an
// endless loop.
func TestBulkLoopStops(t *testing.T) {
	bin := wasmtest.WAT(t, `(module (memory 256)
	  (func (export "spin") (loop $l (memory.fill (i32.const 0) (i32.const 1) (i32.const 16777216)) (br $l))))`)
	mod, _ := instantiate(t, bin, instrument.Options{})
	done := make(chan error, 1)
	go func() {
		_, err := mod.ExportedFunction("spin").Call(context.Background())
		done <- err
	}()
	mod.ExportedGlobal(instrument.InterruptExport).(api.MutableGlobal).Set(1)
	if err := waitErr(t, done); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err = %v, want an unreachable trap", err)
	}
}

func TestTableLimits(t *testing.T) {
	t.Run("sum of minima", func(t *testing.T) {
		bin := wasmtest.WAT(t, `(module (table 600000 funcref) (table 600000 funcref))`)
		_, err := instrument.Rewrite(bin, instrument.Options{})
		if err == nil || !strings.Contains(err.Error(), "tables declare 1200000 elements in all") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("growth shared", func(t *testing.T) {
		bin := wasmtest.WAT(t, `(module (table $a 0 funcref) (table $b 0 funcref)
		  (func (export "grow_a") (param i32) (result i32) (table.grow $a (ref.null func) (local.get 0)))
		  (func (export "grow_b") (param i32) (result i32) (table.grow $b (ref.null func) (local.get 0))))`)
		mod, _ := instantiate(t, bin, instrument.Options{})
		ctx := context.Background()
		half := uint64(instrument.MaxTableElements / 2)
		for _, name := range []string{"grow_a", "grow_b"} {
			if res, err := mod.ExportedFunction(name).Call(ctx, half); err != nil || res[0] != 0 {
				t.Fatalf("%s(%d) = %v, %v; want 0", name, half, res, err)
			}
			if res, err := mod.ExportedFunction(name).Call(ctx, 1); err != nil || int32(res[0]) != -1 {
				t.Fatalf("%s(1) past the cap = %v, %v; want -1", name, res, err)
			}
		}
	})
}

func TestSectionLimits(t *testing.T) {
	typeSec := sec(1, vec(fn(nil, nil)))
	for _, tc := range []struct {
		name string
		bin  []byte
		want string
	}{
		{"module name past its sub-section", wasmModule(sec(0, cat(str("name"), []byte{0}, u32(2), str("abcdef")))),
			"name section"},
		{"module name not UTF-8", wasmModule(sec(0, cat(str("name"), []byte{0}, u32(3), str("\xff\xfe")))),
			"module name: not valid UTF-8"},
		{"function names left over", wasmModule(sec(0, cat(str("name"), []byte{1}, u32(6), vec(cat(u32(0), str("f"))), []byte{9, 9}))),
			"function names sub-section: 2 bytes left over"},
		{"two name sections", wasmModule(sec(0, str("name")), sec(0, str("name"))), "name section repeated"},
		{"too many types", wasmModule(sec(1, cat(u32(instrument.MaxTypes+1), make([]byte, instrument.MaxTypes+1)))),
			"1000001 types, more than the 1000000"},
		{"too many params", wasmModule(sec(1, vec(cat([]byte{0x60}, u32(instrument.MaxParams+1), make([]byte, instrument.MaxParams+1), u32(0))))),
			"1001 parameters"},
		{"long export name", wasmModule(typeSec, sec(7, vec(cat(str(strings.Repeat("x", instrument.MaxNameLength+1)), []byte{0, 0})))),
			"name of 65537 bytes"},
		{"start section left over", wasmModule(typeSec, sec(8, []byte{0, 0})), "start section: 1 bytes left over"},
		{"section past the end", append(wasmModule(), 1, 0x10, 0), "type section: size 16 past the end of the file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := instrument.Rewrite(tc.bin, instrument.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// waitErr waits for a guest call's result, failing the test if the guest is
// not interrupted within a bound generous enough to only catch a hang.
func waitErr(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("guest was not interrupted within 10s")
		return nil
	}
}

// TestStackBudgetBoundsHostMemory recurses to the trap, in a small frame
// and in a fat one, and bounds what the host allocated for the guest's
// stack (wazero grows it as Go memory): without the budget, wazero lets the
// stack grow to its own limit, ~80 MB allocated per call.
func TestStackBudgetBoundsHostMemory(t *testing.T) {
	bin := wasmtest.WAT(t, `(module
	  (func $small (export "small") (param i32) (result i32)
	    (i32.add (i32.const 1) (call $small (local.get 0))))
	  (func $fat (export "fat") (param i32) (result i32) (local i64 i64 i64 i64 i64 i64 i64 i64
	      i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)
	    (local.set 1 (i64.extend_i32_u (local.get 0)))
	    (i32.add (i32.wrap_i64 (local.get 1)) (call $fat (local.get 0)))))`)
	mod, _ := instantiate(t, bin, instrument.Options{})
	for _, name := range []string{"small", "fat"} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := mod.ExportedFunction(name).Call(context.Background(), 1)
			runtime.ReadMemStats(&after)
			if err == nil || mod.ExportedGlobal(instrument.StackExhaustedExport).Get() != 1 {
				t.Fatalf("err = %v, want the stack budget's trap", err)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("recursion to the trap allocated %.1f MiB", float64(alloc)/(1<<20))
			if alloc > 32<<20 {
				t.Fatalf("recursion to the trap allocated %d bytes, want under 32 MiB", alloc)
			}
		})
	}
}

// TestRefusesReferencesToAddedItems: the rewrite appends types, functions
// and globals, so a reference just past the module's own would become
// valid and reach the router's.
func TestRefusesReferencesToAddedItems(t *testing.T) {
	types := sec(1, vec(fn(nil, nil)))
	funcs := sec(3, vec(u32(0)))
	code := func(c ...byte) []byte { return sec(10, vec(body(c...))) }
	for _, tc := range []struct {
		name string
		bin  []byte
		want string
	}{
		{"block type", wasmModule(types, funcs, code(0x02, 0x01, 0x0b, 0x0b)), "type 1 does not exist"},
		{"call", wasmModule(types, funcs, code(0x10, 0x01, 0x0b)), "function 1 does not exist"},
		{"call_indirect type", wasmModule(types, funcs, sec(4, vec([]byte{0x70, 0, 1})), code(0x41, 0, 0x11, 0x01, 0x00, 0x0b)), "type 1 does not exist"},
		{"ref.func", wasmModule(types, funcs, code(0xd2, 0x01, 0x1a, 0x0b)), "function 1 does not exist"},
		{"export of a function", wasmModule(types, funcs, sec(7, vec(exportFunc("slow", 1))), code(0x0b)), `export "slow": function 1 does not exist`},
		{"export of a global", wasmModule(types, funcs, sec(7, vec(cat(str("g"), []byte{3, 0}))), code(0x0b)), `export "g": global 0 does not exist`},
		{"element segment", wasmModule(types, funcs, sec(4, vec([]byte{0x70, 0, 1})), sec(9, vec(cat([]byte{0, 0x41, 0, 0x0b}, vec(u32(1))))), code(0x0b)), "function 1 does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := instrument.Rewrite(tc.bin, instrument.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
