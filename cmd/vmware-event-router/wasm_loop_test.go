package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// loopForever is a filter that never returns: the hostile case the
// per-event deadline exists for.
const loopForever = `(module
  (memory (export "memory") 1)
  (func (export "evr_abi_version_1"))
  (func (export "evr_filter") (param i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))`

// TestLoopingFilterBoundedByTimeout: a module that loops forever is stopped
// at its timeout, until its breaker opens after 5 timeouts and on_error
// applies without calling it; with on_error "pass" every event still
// reaches the processor and the daemon stays up.
func TestLoopingFilterBoundedByTimeout(t *testing.T) {
	sim := vcsimtest.Start(t)
	dir := t.TempDir()
	src, module := filepath.Join(dir, "loop.wat"), filepath.Join(dir, "loop.wasm")
	if err := os.WriteFile(src, []byte(loopForever), 0o600); err != nil {
		t.Fatal(err)
	}
	// wat2wasm comes from Debian's wabt, which make test installs.
	if out, err := exec.Command("wat2wasm", src, "-o", module).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm (apt-get install wabt): %v\n%s", err, out)
	}
	filter := map[string]any{"type": "filter", "provider": "wasm", "address": module,
		"options": map[string]any{"timeout": "50ms", "on_error": "pass", "pool_size": "2"}}
	d := startCore(t, sim.Config(), filter, stdoutEntry)
	waitReady(t, d.metrics)
	const n = 10
	sim.PostEx("loop", 0, n)
	waitMessages(t, d, "loop", n, 60*time.Second)
	_, body := httpGet(t, d.metrics+"/metrics")
	// The breaker's first cool-down is 1 s: a probe may have timed out
	// too, but not every event.
	timeouts := 0
	for k := 5; k < n; k++ {
		if strings.Contains(body, fmt.Sprintf(`eventrouter_filter_errors_total{filter="loop.wasm",kind="timeout"} %d`+"\n", k)) {
			timeouts = k
		}
	}
	for _, want := range []string{
		fmt.Sprintf(`eventrouter_filter_verdicts_total{filter="loop.wasm",verdict="error"} %d`, n),
		`eventrouter_filter_breaker_open{filter="loop.wasm"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if timeouts == 0 {
		t.Errorf("timeouts: want 5 to %d (the breaker stops calling the module):\n%s", n-1, grepLines(body, "eventrouter_filter"))
	}
}

// TestBadModuleStopsStartup: at start-up a module the router would refuse
// stops it, before any event, with one message naming the file.
func TestBadModuleStopsStartup(t *testing.T) {
	sim := vcsimtest.Start(t)
	dir := t.TempDir()
	tests := []struct {
		name, file, src, want string
	}{
		{"garbage", "garbage.wasm", "", "not a WebAssembly module"},
		{"no evr_filter", "nofilter.wasm", `(module (memory (export "memory") 1) (func (export "evr_abi_version_1")))`, `evr_filter`},
		{"wrong signature", "wrongsig.wasm", `(module (memory (export "memory") 1) (func (export "evr_abi_version_1"))
  (func (export "evr_filter") (param i64) (result i32) (i32.const 0)))`, `signature`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			module := filepath.Join(dir, tt.file)
			if tt.src == "" {
				if err := os.WriteFile(module, []byte("this is not wasm"), 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				src := module + ".wat"
				if err := os.WriteFile(src, []byte(tt.src), 0o600); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command("wat2wasm", src, "-o", module).CombinedOutput(); err != nil {
					t.Fatalf("wat2wasm (apt-get install wabt): %v\n%s", err, out)
				}
			}
			filter := map[string]any{"type": "filter", "provider": "wasm", "address": module}
			path := writeConfig(t, sim.Config(), filter, stdoutEntry, metricsEntry("127.0.0.1:0"))
			code, log := runToExit(t, path, 30*time.Second)
			if code != 1 || !strings.Contains(log, module) || !strings.Contains(log, tt.want) {
				t.Errorf("exit %d, log:\n%s\nwant exit 1 naming %s and %q", code, log, module, tt.want)
			}
		})
	}
}
