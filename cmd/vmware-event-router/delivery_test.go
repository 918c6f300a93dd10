package main

// At-least-once delivery, end to end: the real daemon (as a process where a
// crash is the point), the simulator, the test OpenFaaS gateway, and the
// checkpoint and dead-letter files on disk.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway/checkpoint"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// routerBinary builds the daemon once per test run.
func routerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "evr-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "vmware-event-router")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// lineEvent is what the tests read of a CloudEvent line.
type lineEvent struct {
	ID   string `json:"id"`
	Data struct {
		Key     int32
		Message string
	} `json:"data"`
}

func readEvents(t *testing.T, data []byte, prefix string) []lineEvent {
	t.Helper()
	var out []lineEvent
	for _, line := range bytes.Split(data, []byte("\n")) {
		var ev lineEvent
		if len(line) == 0 || json.Unmarshal(line, &ev) != nil {
			continue // the last line of a killed process may be cut
		}
		if strings.HasPrefix(ev.Data.Message, prefix+"-") {
			out = append(out, ev)
		}
	}
	return out
}

// startProcess runs the daemon binary with stdout to a file.
func startProcess(t testing.TB, config, out string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	var stderr bytes.Buffer
	cmd := exec.Command(routerBinary(t), "-config", config)
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("daemon log (%s):\n%s", out, tail(stderr.String(), 3000))
		}
	})
	return cmd
}

func waitReady(t testing.TB, metricsURL string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := httpGet(t, metricsURL+"/readyz"); code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCrashRestartLosesNothing SIGKILLs the daemon in the middle of an
// 800-event burst and starts it again: every event is delivered; the second
// run delivers exactly the events after the checkpointed watermark (the
// duplicates are bounded by what was in flight) and a duplicate keeps its id.
func TestCrashRestartLosesNothing(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long daemon tests
	const n = 800
	sim := vcsimtest.Start(t)
	state := t.TempDir()
	addr := freeAddr(t)
	config := writeConfig(t, sim.Config(), stdoutEntry, metricsEntry(addr),
		map[string]any{"type": "internal", "provider": "state", "address": state})
	dir := t.TempDir()
	out1, out2 := filepath.Join(dir, "run1.jsonl"), filepath.Join(dir, "run2.jsonl")

	first := startProcess(t, config, out1)
	waitReady(t, "http://"+addr)
	posted := make(chan struct{})
	go func() {
		defer close(posted)
		sim.PostEx("burst", 0, n)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, _ := os.ReadFile(out1)
		if len(readEvents(t, data, "burst")) >= 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first run did not deliver 200 events")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	<-posted

	files, _ := filepath.Glob(filepath.Join(state, "checkpoints", "vcenter-*.json"))
	if len(files) != 1 {
		t.Fatalf("checkpoint files after the crash: %v", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var cp checkpoint.File
	if err := json.Unmarshal(data, &cp); err != nil {
		t.Fatalf("checkpoint after SIGKILL is not valid: %v: %s", err, data)
	}
	run1, _ := os.ReadFile(out1)
	firstRun := readEvents(t, run1, "burst")

	startProcess(t, config, out2)
	byMsg := map[string]string{}
	for _, ev := range firstRun {
		byMsg[ev.Data.Message] = ev.ID
	}
	var secondRun []lineEvent
	deadline = time.Now().Add(90 * time.Second)
	for {
		run2, _ := os.ReadFile(out2)
		secondRun = readEvents(t, run2, "burst")
		all := map[string]bool{}
		for _, ev := range append(append([]lineEvent(nil), firstRun...), secondRun...) {
			all[ev.Data.Message] = true
		}
		if len(all) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events delivered over both runs (first %d, second %d, checkpoint key %d)",
				len(all), n, len(firstRun), len(secondRun), cp.Watermark.Key)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dups := 0
	for _, ev := range secondRun {
		if ev.Data.Key <= cp.Watermark.Key {
			t.Errorf("second run redelivered key %d, at or before the checkpoint (key %d)", ev.Data.Key, cp.Watermark.Key)
		}
		if id, ok := byMsg[ev.Data.Message]; ok {
			dups++
			if id != ev.ID {
				t.Errorf("%s redelivered with id %s, first %s", ev.Data.Message, ev.ID, id)
			}
		}
	}
	t.Logf("first run %d events, checkpoint at key %d, second run %d events of which %d duplicates",
		len(firstRun), cp.Watermark.Key, len(secondRun), dups)
}

// TestProcessorOutage60s: the OpenFaaS gateway down for 60 s under
// 5 events/s loses nothing; the stream waits and catches up.
func TestProcessorOutage60s(t *testing.T) {
	t.Parallel()
	sim := vcsimtest.Start(t)
	gw, err := faastest.New(faastest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	fn := gw.Deploy("sink", "", map[string]string{"topic": "com.example.outage"})
	d := startCore(t, sim.Config(), openfaasEntry(gw, nil),
		map[string]any{"type": "internal", "provider": "state", "address": t.TempDir()})
	waitReady(t, d.metrics)

	const rate, outage = 5, 60 * time.Second
	total := 0
	post := func(d time.Duration) {
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
			sim.PostEx("outage", total, 1)
			total++
		}
	}
	post(2 * time.Second)
	gw.Stop()
	post(outage)
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	post(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = fn.Wait(ctx, func(calls []faastest.Call) bool { return len(received(calls)) == total })
	got := received(fn.Calls())
	if err != nil {
		t.Fatalf("%d of %d events delivered after a %s outage; log:\n%s", len(got), total, outage, tail(d.stderr.String(), 3000))
	}
	for i := range total {
		if !got[fmt.Sprintf("outage-%d", i)] {
			t.Errorf("outage-%d lost", i)
		}
	}
}

// received returns the messages a function answered with success.
func received(calls []faastest.Call) map[string]bool {
	out := map[string]bool{}
	for _, c := range calls {
		var ev lineEvent
		if c.Status < 300 && json.Unmarshal(c.Body, &ev) == nil {
			out[ev.Data.Message] = true
		}
	}
	return out
}

func openfaasEntry(gw *faastest.Gateway, opts map[string]any) map[string]any {
	o := map[string]any{"refresh_interval": "200ms"}
	for k, v := range opts {
		o[k] = v
	}
	return map[string]any{"type": "processor", "provider": "openfaas", "address": gw.URL(),
		"auth":    map[string]any{"method": "basic_auth", "secret": map[string]any{"username": gw.User, "password": gw.Password}},
		"options": o}
}

// TestDeadLetterReplay: a function that rejects events (400) gets them
// dead-lettered into the state directory at once; once it is fixed,
// `replay` delivers every one of them to it, and only to it.
func TestDeadLetterReplay(t *testing.T) {
	sim := vcsimtest.Start(t)
	gw, err := faastest.New(faastest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	broken := gw.Deploy("broken", "", map[string]string{"topic": "com.example.dl"})
	healthy := gw.Deploy("healthy", "", map[string]string{"topic": "com.example.dl"})
	broken.Fail(400)
	state := t.TempDir()
	stateEntry := map[string]any{"type": "internal", "provider": "state", "address": state}
	d := startCore(t, sim.Config(), openfaasEntry(gw, nil), stateEntry)
	waitReady(t, d.metrics)
	sim.PostEx("dl", 0, 10)

	dlFile := filepath.Join(state, "dead-letter", "dead-letter.jsonl")
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(dlFile)
		if bytes.Count(data, []byte("\n")) == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead-letter file has %d lines, want 10; log:\n%s", bytes.Count(data, []byte("\n")), tail(d.stderr.String(), 3000))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("daemon exited %d", code)
	}
	healthyBefore := len(healthy.Calls())

	broken.Recover()
	replayed := filepath.Join(t.TempDir(), "replay.jsonl")
	data, _ := os.ReadFile(dlFile)
	if err := os.WriteFile(replayed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	config := writeConfig(t, sim.Config(), openfaasEntry(gw, nil), metricsEntry(freeAddr(t)), stateEntry)
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if code := run(ctx, []string{"replay", "-config", config, replayed}, &stdout, &stderr); code != 0 {
		t.Fatalf("replay exited %d:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "replayed 10 dead letters: 10 delivered") {
		t.Errorf("replay report: %s", stderr.String())
	}
	got := received(broken.Calls())
	for i := range 10 {
		if !got[fmt.Sprintf("dl-%d", i)] {
			t.Errorf("dl-%d not replayed to the function that rejected it", i)
		}
	}
	if n := len(healthy.Calls()); n != healthyBefore {
		t.Errorf("replay sent %d events to a function that had them already", n-healthyBefore)
	}
}
