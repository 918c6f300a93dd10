package wasm

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

// guest wraps body (WAT instructions of evr_filter, which takes the event
// length in local 0 and returns a verdict) in a module with the evr
// imports, a memory and the ABI marker. extra adds module fields (after
// the evr imports, so it may hold imports too).
func guest(body, extra string) string {
	return `(module
  (import "evr" "read_event" (func $read_event (param i32 i32) (result i32)))
  (import "evr" "set_output" (func $set_output (param i32 i32)))
  (import "evr" "set_error" (func $set_error (param i32 i32)))
  (import "evr" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "evr" "log" (func $log (param i32 i32 i32)))
  ` + extra + `
  (memory (export "memory") 2)
  (func (export "evr_abi_version_1"))
  (func (export "evr_filter") (param $len i32) (result i32)
    ` + body + `))`
}

// passWAT is the smallest filter: it passes every event without reading it.
var passWAT = guest(`(i32.const 0)`, "")

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	host *Host
	m    *metrics.Metrics
	logs *syncBuffer
	dir  string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{m: metrics.New(), logs: &syncBuffer{}, dir: t.TempDir()}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := NewHost(HostOptions{Log: log, Metrics: e.m})
	if err != nil {
		t.Fatal(err)
	}
	e.host = h
	t.Cleanup(func() { _ = h.Close() })
	return e
}

func opts(mod ...func(*config.WasmFilter)) config.WasmFilter {
	o := config.WasmFilter{Timeout: 100 * time.Millisecond, OnError: config.OnErrorDeadLetter, MemoryLimit: 16 << 20, PoolSize: 2}
	for _, f := range mod {
		f(&o)
	}
	return o
}

// write stores bin as dir/name and returns its path.
func write(t testing.TB, dir, name string, bin []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// load assembles src and loads it as name.
func (e *env) load(t testing.TB, name, src string, o config.WasmFilter) *Filter {
	t.Helper()
	f, err := e.host.Load(context.Background(), write(t, e.dir, name, wasmtest.WAT(t, src)), o)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func event(subject, vm string) *gateway.Event {
	return &gateway.Event{ID: "08179137-b8e0-4973-b05f-8f212bf5003b", Source: "https://10.0.0.1:443/sdk",
		Subject: subject, Time: time.Date(2020, 2, 11, 21, 28, 23, 0, time.UTC), Key: 9902,
		Entity: "VirtualMachine:vm-56", JSON: wasmtest.Event(subject, vm)}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func contains(t testing.TB, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("got %q, want it to contain %q", got, want)
	}
}
