package instrument_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// pinnedRewrites is the SHA-256 of everything Rewrite returns for
// pinCorpus: outputs, flags, imports and error messages.
const pinnedRewrites = "257a712bc6dd6a6fe05e5e47b668e9af0d4a7718cef8f15caacb18788b3c39d1"

// TestRewriteOutputPinned pins Rewrite's output, byte for byte, and its
// errors: a change made for speed must not change what the sandbox runs.
// A change that means to alter the output updates pinnedRewrites (the
// failure prints the new value) and says why in its commit.
func TestRewriteOutputPinned(t *testing.T) {
	h := sha256.New()
	for i, in := range pinCorpus(t) {
		for _, pages := range []uint32{0, 1, 64} {
			out, err := instrument.Rewrite(in, instrument.Options{MemoryLimitPages: pages})
			if err != nil {
				_, _ = fmt.Fprintf(h, "%d/%d error %s\n", i, pages, err) // a hash never fails
				continue
			}
			_, _ = fmt.Fprintf(h, "%d/%d start %t memory %t imports %v %d\n", i, pages, out.HasStart, out.HasMemory, out.Imports, len(out.Binary))
			h.Write(out.Binary)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != pinnedRewrites {
		t.Fatalf("Rewrite's output changed: its hash is %s, pinnedRewrites %s", got, pinnedRewrites)
	}
}

// pinCorpus is a fixed set of modules: the WAT coverage module, the
// committed example filters, generated modules of many shapes (the choices
// of FuzzRewrite's seeds, more of them), and corrupted copies of each, for
// the errors.
func pinCorpus(t *testing.T) [][]byte {
	corpus := [][]byte{
		wasmtest.WAT(t, coverage),
		wasmtest.WAT(t, `(module (func (export "f") (loop (br 0))))`),
	}
	for _, name := range []string{"drop-powered-off/drop-powered-off.wasm", "subject-map/subject-map.wasm"} {
		bin, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "filters", name))
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, bin)
	}
	x := uint32(2463534242)
	next := func() uint32 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return x
	}
	for i := range 200 {
		choices := make([]byte, 64+16*i)
		for j := range choices {
			choices[j] = byte(next())
		}
		corpus = append(corpus, genModule(choices))
	}
	for _, bin := range corpus[:len(corpus):len(corpus)] {
		for range 3 {
			bad := append([]byte(nil), bin...)
			bad[8+int(next()%uint32(len(bad)-8))] ^= byte(next()) | 1
			corpus = append(corpus, bad)
		}
	}
	return corpus
}

// BenchmarkRewrite rewrites the Go example filter (2.7 MB, 1,800
// functions), the largest module a cold load rewrites.
//
//	go test -run '^$' -bench Rewrite -benchmem ./wasm/internal/instrument/
func BenchmarkRewrite(b *testing.B) {
	bin := wasmtest.GoPackage(b, filepath.Join("..", "..", "..", "examples", "filters", "go-drop-test-vms"))
	b.SetBytes(int64(len(bin)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := instrument.Rewrite(bin, instrument.Options{MemoryLimitPages: 256}); err != nil {
			b.Fatal(err)
		}
	}
}
