package main

// Daemon-level tests of the Wasm sandbox: filters with ordinary bugs,
// written against the documented ABI, cannot stall, exhaust or hang the
// router.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// Buggy filters, each with the ABI's exports and nothing else.
var buggyFilters = map[string]string{
	// A retry loop that sleeps 10 ms per turn (WASI poll_oneoff, as Go's
	// time.Sleep and C's nanosleep compile to) and never gives up.
	"sleeploop": `(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 24) "\80\96\98\00\00\00\00\00") ;; a relative clock subscription of 10,000,000 ns
  (func (export "evr_abi_version_1"))
  (func (export "evr_filter") (param i32) (result i32)
    (loop $retry
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (br $retry))
    (i32.const 0)))`,
	// Unbounded recursion.
	"recursion": `(module
  (memory (export "memory") 1)
  (func (export "evr_abi_version_1"))
  (func $down (param i32) (result i32) (call $down (i32.add (local.get 0) (i32.const 1))))
  (func (export "evr_filter") (param i32) (result i32) (call $down (i32.const 0))))`,
	// A loop of large memory.fills over all of a 16 MiB memory.
	"memfill": `(module
  (memory (export "memory") 255)
  (func (export "evr_abi_version_1"))
  (func (export "evr_filter") (param i32) (result i32)
    (loop $again
      (memory.fill (i32.const 0) (i32.const 0) (i32.const 16711680))
      (br $again))
    (i32.const 0)))`,
}

// buildFilters assembles the named buggy filters into dir as NAME.wasm.
func buildFilters(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, name := range names {
		src, module := filepath.Join(t.TempDir(), name+".wat"), filepath.Join(dir, name+".wasm")
		if err := os.WriteFile(src, []byte(buggyFilters[name]), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("wat2wasm", src, "-o", module).CombinedOutput(); err != nil {
			t.Fatalf("wat2wasm (apt-get install wabt): %v\n%s", err, out)
		}
	}
}

// peakRSS is a process's peak resident set size (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM: %v", err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// sandboxOverhead is the documented constant of the memory bound: the
// router's peak RSS with any filters is at most the sum of pool_size x
// memory_limit over the filters plus this.
const sandboxOverhead = 64 << 20

// TestBuggyFiltersContained runs the router binary with a sleep loop, an
// unbounded recursion and a memory.fill loop as filters (timeout 100ms,
// 5s for the recursion; on_error pass): every event still reaches the processor, each filter's
// failures are counted by kind, the peak RSS stays within the bound, and
// SIGTERM ends the process promptly.
func TestBuggyFiltersContained(t *testing.T) {
	sim := vcsimtest.Start(t)
	filterDir, recursionDir := t.TempDir(), t.TempDir()
	buildFilters(t, filterDir, "sleeploop", "memfill")
	buildFilters(t, recursionDir, "recursion")
	const poolSize, memoryLimit = 2, 16 << 20
	addr := freeAddr(t)
	filter := func(address, timeout string) map[string]any {
		return map[string]any{"type": "filter", "provider": "wasm", "address": address,
			"options": map[string]any{"timeout": timeout, "on_error": "pass",
				"pool_size": strconv.Itoa(poolSize), "memory_limit": "16MiB"}}
	}
	// The recursion gets a timeout it never needs on a quiet machine: on a
	// loaded one, 15,000 calls deep can take longer than 100 ms, and the
	// test is that it ends as "stack", not as "timeout".
	config := writeConfig(t, sim.Config(), stdoutEntry, metricsEntry(addr),
		filter(filterDir, "100ms"), filter(filepath.Join(recursionDir, "recursion.wasm"), "5s"))
	out := filepath.Join(t.TempDir(), "out.jsonl")
	cmd := startProcess(t, config, out)
	waitReady(t, "http://"+addr)

	const n = 6
	sim.PostEx("sandbox", 0, n)
	deadline := time.Now().Add(120 * time.Second)
	for {
		data, _ := os.ReadFile(out)
		if got := readEvents(t, data, "sandbox"); len(got) == n {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d of %d events delivered", len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, body := httpGet(t, "http://"+addr+"/metrics")
	// Each module failed on every event it was called for: five, when its
	// breaker opened, or six if the breaker's probe came before the last
	// event (a slow machine). Every event counts as an error verdict.
	for _, series := range []string{
		`eventrouter_filter_errors_total{filter="sleeploop.wasm",kind="timeout"} `,
		`eventrouter_filter_errors_total{filter="recursion.wasm",kind="stack"} `,
		`eventrouter_filter_errors_total{filter="memfill.wasm",kind="timeout"} `,
	} {
		if !strings.Contains(body, series+"5\n") && !strings.Contains(body, series+"6\n") {
			t.Errorf("/metrics lacks %s5 (or 6):\n%s", series, grepLines(body, "eventrouter_filter_errors_total"))
		}
	}
	for _, f := range []string{"sleeploop.wasm", "recursion.wasm", "memfill.wasm"} {
		want := `eventrouter_filter_verdicts_total{filter="` + f + `",verdict="error"} ` + strconv.Itoa(n)
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(body, "eventrouter_filter_verdicts_total"))
		}
	}

	rss := peakRSS(t, cmd.Process.Pid)
	bound := int64(3*poolSize*memoryLimit + sandboxOverhead)
	t.Logf("peak RSS %d MiB (bound %d MiB)", rss>>20, bound>>20)
	if rss > bound {
		t.Errorf("peak RSS %d MiB, over the bound of %d MiB", rss>>20, bound>>20)
	}

	// A filter call is in progress at most of the time: shutdown must not
	// wait on it.
	sim.PostEx("late", 0, 3)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
		t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second): // generous, and under the 15 s hard exit
		t.Fatal("the router did not exit within 10 s of SIGTERM")
	}
}

// TestFilterCommandBuggyModules: the filter verb gives each event an error
// verdict and returns, whatever the module does.
func TestFilterCommandBuggyModules(t *testing.T) {
	dir := t.TempDir()
	buildFilters(t, dir, "sleeploop", "recursion", "memfill")
	events := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(events, []byte(offEvent+"\n"+onEvent+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, kind := range map[string]string{"sleeploop": "timeout", "recursion": "stack", "memfill": "timeout"} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := make(chan int, 1)
			go func() {
				timeout := "100ms"
				if kind == "stack" {
					timeout = "5s" // see TestBuggyFiltersContained
				}
				code <- filterCommand([]string{"-wasm", filepath.Join(dir, name+".wasm"), "-timeout", timeout, events},
					strings.NewReader(""), &stdout, &stderr)
			}()
			select {
			case c := <-code:
				if c != filterExitEventErr {
					t.Fatalf("exit %d, want %d; stderr %q", c, filterExitEventErr, stderr.String())
				}
			case <-time.After(60 * time.Second): // generous: it hung for minutes
				t.Fatal("the filter verb did not finish")
			}
			for i := 1; i <= 2; i++ {
				if want := fmt.Sprintf("error\tline %d: %s: ", i, kind); !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout %q lacks %q", stdout.String(), want)
				}
			}
		})
	}
}
