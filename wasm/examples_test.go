package wasm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// The example filters of examples/filters, each built from its source and
// run. The committed prebuilt modules must match what their sources build.

func examplesDir(t testing.TB) string {
	return filepath.Join(wasmtest.RepoRoot(t), "examples", "filters")
}

type exampleCase struct {
	subject, vm string
	verdict     filters.Verdict
	subjectOut  string
}

func runExample(t *testing.T, e *env, name string, bin []byte, cfg string, cases []exampleCase) {
	t.Helper()
	f, err := e.host.Load(context.Background(), write(t, t.TempDir(), name, bin), opts(func(o *config.WasmFilter) { o.Config = cfg }))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	for _, c := range cases {
		r := f.Filter(context.Background(), event(c.subject, c.vm))
		if r.Verdict != c.verdict {
			t.Fatalf("%s/%s: verdict %v (%v), want %v", c.subject, c.vm, r.Verdict, r.Err, c.verdict)
		}
		if c.verdict == filters.Replace && r.Event.Subject != c.subjectOut {
			t.Fatalf("%s: subject %q, want %q", c.subject, r.Event.Subject, c.subjectOut)
		}
	}
}

func readFile(t testing.TB, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (a committed fixture is missing)", err)
	}
	return b
}

func TestExampleDropPoweredOffWAT(t *testing.T) {
	dir := filepath.Join(examplesDir(t), "drop-powered-off")
	built := wasmtest.WATFile(t, filepath.Join(dir, "drop-powered-off.wat"))
	if committed := readFile(t, filepath.Join(dir, "drop-powered-off.wasm")); !bytes.Equal(built, committed) {
		t.Fatal("drop-powered-off.wasm is stale: run make -C examples/filters")
	}
	runExample(t, newEnv(t), "drop-powered-off.wasm", built, "", []exampleCase{
		{"VmPoweredOffEvent", "vm-1", filters.Drop, ""},
		{"VmPoweredOnEvent", "vm-1", filters.Pass, ""},
		{"VmPoweredOffEventEx", "vm-1", filters.Pass, ""},
		// An event larger than the module's initial memory.
		{"VmPoweredOffEvent", string(bytes.Repeat([]byte("x"), 100000)), filters.Drop, ""},
	})
}

func TestExampleSubjectMapC(t *testing.T) {
	dir := filepath.Join(examplesDir(t), "subject-map")
	cases := []exampleCase{
		{"VmPoweredOffEvent", "vm-1", filters.Replace, "VmStopped"},
		{"VmPoweredOnEvent", "vm-1", filters.Replace, "VmStarted"},
		{"VmCreatedEvent", "vm-1", filters.Pass, ""},
	}
	cfg := "VmPoweredOffEvent=VmStopped,VmPoweredOnEvent=VmStarted"
	t.Run("committed", func(t *testing.T) {
		runExample(t, newEnv(t), "subject-map.wasm", readFile(t, filepath.Join(dir, "subject-map.wasm")), cfg, cases)
	})
	t.Run("rebuilt with clang", func(t *testing.T) {
		runExample(t, newEnv(t), "subject-map.wasm", wasmtest.CFile(t, filepath.Join(dir, "subject-map.c")), cfg, cases)
	})
	t.Run("bad config refuses to load", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.host.Load(context.Background(), write(t, e.dir, "subject-map.wasm", readFile(t, filepath.Join(dir, "subject-map.wasm"))),
			opts(func(o *config.WasmFilter) { o.Config = "nonsense" }))
		contains(t, err.Error(), "evr_init returned 1, refusing to load: config must be From=To pairs")
	})
}

func TestExampleGoDropTestVMs(t *testing.T) {
	bin := wasmtest.GoPackage(t, filepath.Join(examplesDir(t), "go-drop-test-vms"))
	runExample(t, newEnv(t), "go-drop-test-vms.wasm", bin, "", []exampleCase{
		{"VmPoweredOffEvent", "test-01", filters.Drop, ""},
		{"VmPoweredOffEvent", "prod-01", filters.Pass, ""},
	})
	runExample(t, newEnv(t), "go-drop-test-vms.wasm", bin, "prod-", []exampleCase{
		{"VmPoweredOffEvent", "test-01", filters.Pass, ""},
		{"VmPoweredOffEvent", "prod-01", filters.Drop, ""},
	})
	e := newEnv(t)
	_, err := e.host.Load(context.Background(), write(t, e.dir, "go.wasm", bin), opts(func(o *config.WasmFilter) { o.Config = "a b" }))
	contains(t, err.Error(), "refusing to load: config: the VM name prefix must not contain spaces")
}
