package instrument_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the generated seeds in testdata/fuzz/FuzzRewrite")

// fuzzMemoryPages is the memory limit FuzzRewrite rewrites and runs with.
const fuzzMemoryPages = 64

// FuzzRewrite is the differential check of the rewriter against wazero.
// Its input's first byte chooses what the rest is: a module as is (even:
// the mutated binaries) or the choices of genModule (odd: valid modules of
// many shapes). For every module Rewrite accepts:
//
//   - (b) if wazero's compiler accepts the original, it accepts the
//     rewrite;
//   - (a) if wazero refuses the original, it refuses the rewrite: the
//     rewrite adds globals and functions, so a module that refers to
//     globals it lacks (hiding the reference from the rewriter in bytes it
//     reads differently from wazero) would become valid, and able to reach
//     the router's globals; and the rewrite's exports, called with zero
//     arguments, never set the interrupt flag or the stack flag on a
//     normal return;
//   - a generated module is valid, and accepted.
//
// The seeds in testdata/fuzz/FuzzRewrite run with every go test; search
// longer with
//
//	go test -run '^$' -fuzz FuzzRewrite -fuzztime 5m ./wasm/internal/instrument
//
// and rebuild the generated seeds with
//
//	go test -run FuzzRewrite ./wasm/internal/instrument -write-corpus
func FuzzRewrite(f *testing.F) {
	f.Add(append([]byte{0}, wasmtest.WAT(f, coverage)...))
	f.Add(append([]byte{0}, wasmtest.WAT(f, `(module (func (export "f") (loop (br 0))))`)...))
	f.Add([]byte("\x00\x00asm\x01\x00\x00\x00"))
	if *writeCorpus {
		writeSeeds(f)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		bin, generated := data[1:], data[0]&1 == 1
		if generated {
			bin = genModule(data[1:])
		}
		checkRewrite(t, bin, generated)
	})
}

func checkRewrite(t *testing.T, bin []byte, generated bool) {
	out, err := instrument.Rewrite(bin, instrument.Options{MemoryLimitPages: fuzzMemoryPages})
	if err != nil {
		if generated {
			t.Fatalf("Rewrite refused a generated module: %v", err)
		}
		// wazero itself is not asked: what Rewrite refuses may make it
		// allocate without bound (the seed 6dffb912d1072d70).
		return
	}
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithMemoryLimitPages(fuzzMemoryPages))
	defer func() { _ = r.Close(ctx) }()
	// The rewrite drops custom sections other than "name", which wazero
	// may refuse for reasons of its own (an empty one at the end of the
	// file): compare with the original without them.
	_, origErr := r.CompileModule(ctx, withoutCustomSections(bin))
	if generated && origErr != nil {
		t.Fatalf("the generator made an invalid module: %v", origErr)
	}
	cm, rewErr := r.CompileModule(ctx, out.Binary)
	switch {
	case origErr == nil && rewErr != nil:
		t.Fatalf("wazero accepts the module but not its rewrite: %v", rewErr)
	case origErr != nil && rewErr == nil:
		t.Fatalf("wazero refuses the module (%v) but accepts its rewrite", origErr)
	case rewErr != nil:
		return
	}
	if len(out.Imports) > 0 || !out.HasMemory {
		// Nothing to link imports to. Without a memory, $slow has no
		// memory.grow to exit to Go with, so a long-running guest cannot be
		// preempted and the next garbage collection waits for it, the
		// watchdog below included (filters must export a memory).
		return
	}
	mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithStartFunctions())
	if err != nil {
		return // e.g. a segment out of bounds
	}
	interrupt := mod.ExportedGlobal(instrument.InterruptExport).(api.MutableGlobal)
	stackOut := mod.ExportedGlobal(instrument.StackExhaustedExport).(api.MutableGlobal)
	for name, def := range cm.ExportedFunctions() {
		interrupt.Set(0)
		stackOut.Set(0)
		// A guest that loops is stopped by the flag (then not checked).
		var fired atomic.Bool
		stop := time.AfterFunc(200*time.Millisecond, func() { fired.Store(true); interrupt.Set(1) })
		params := 0
		for _, pt := range def.ParamTypes() {
			params++
			if pt == v128 { // two stack slots
				params++
			}
		}
		_, err := mod.ExportedFunction(name).Call(ctx, make([]uint64, params)...)
		stop.Stop()
		if fired.Load() {
			return
		}
		if v := interrupt.Get(); v != 0 {
			t.Fatalf("%s: the guest set %s to %d", name, instrument.InterruptExport, v)
		}
		if v := stackOut.Get(); err == nil && v != 0 {
			t.Fatalf("%s: returned with %s = %d", name, instrument.StackExhaustedExport, v)
		}
		var exit interface{ ExitCode() uint32 }
		if err != nil && !errors.As(err, &exit) && !strings.Contains(err.Error(), "wasm error") {
			t.Fatalf("%s: unexpected error %v", name, err)
		}
	}
}

// writeSeeds writes generated modules (choices from a fixed sequence) and
// the hostile modules of TestHiddenInstructions into the seed corpus.
func writeSeeds(f *testing.F) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRewrite")
	write := func(name string, data []byte) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	x := uint32(2463534242)
	for i := 0; i < 24; i++ {
		choices := []byte{1}
		for j := 0; j < 64+16*i; j++ {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			choices = append(choices, byte(x))
		}
		write(fmt.Sprintf("gen-%02d", i), choices)
		write(fmt.Sprintf("bin-%02d", i), append([]byte{0}, genModule(choices[1:])...))
	}
}

// withoutCustomSections returns bin without its custom sections other than
// "name", or bin if its sections cannot be read.
func withoutCustomSections(bin []byte) []byte {
	out := append([]byte(nil), bin[:8]...)
	for pos := 8; pos < len(bin); {
		start := pos
		pos++
		var size, shift uint32
		for {
			if pos >= len(bin) || shift > 28 {
				return bin
			}
			c := bin[pos]
			pos++
			size |= uint32(c&0x7f) << shift
			shift += 7
			if c&0x80 == 0 {
				break
			}
		}
		end := pos + int(size)
		if end > len(bin) || end < pos {
			return bin
		}
		payload := bin[pos:end]
		if bin[start] != 0 || (len(payload) > 4 && payload[0] == 4 && string(payload[1:5]) == "name") {
			out = append(out, bin[start:end]...)
		}
		pos = end
	}
	return out
}
