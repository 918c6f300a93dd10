package main

// Tests of the router's state directory at the daemon level: dead letters
// that replay cannot send, and the shutdown order that writes the final
// checkpoint.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/checkpoint"
	"github.com/vmware-samples/vmware-event-router/gateway/deadletter"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// TestReplaySkipsStreamLettersAndTornLines: a dead-letter file with an
// undecodable event's letter (origin stream) and a torn last line still
// replays its other letters; the stream letter is listed and skipped, the
// torn line named.
func TestReplaySkipsStreamLettersAndTornLines(t *testing.T) {
	dir := t.TempDir()
	sink, err := deadletter.NewSink(dir, 1<<20, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	ce := `{"specversion":"1.0","id":"id-1","source":"https://vc/sdk","type":"com.vmware.event.router/event","subject":"VmPoweredOnEvent","datacontenttype":"application/json","data":{"Key":1}}`
	letters := []gateway.DeadLetter{
		{Event: &gateway.Event{ID: "id-1", Key: 1, Time: at, Subject: "VmPoweredOnEvent", JSON: []byte(ce)},
			Origin: gateway.OriginProcessor, Processor: "stdout", Destination: "stdout", Reason: "rejected", Error: "400", Attempts: 1},
		{Origin: gateway.OriginStream, Raw: "<event>broken", Position: gateway.Position{Time: at, Key: 2},
			Reason: "undecodable", Error: "xml: unexpected EOF", Attempts: 1},
	}
	for _, dl := range letters {
		if err := sink.Write(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
	}
	_ = sink.Close()
	file := filepath.Join(dir, deadletter.FileName)
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"time":"2026-12-03T08:00:00Z","origin":"proc`)
	_ = f.Close()

	config := writeConfig(t, map[string]any{"type": "stream", "provider": "vcsim"}, stdoutEntry, metricsEntry(freeAddr(t)))
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if code := run(ctx, []string{"replay", "-config", config, file}, &stdout, &stderr); code != 0 {
		t.Fatalf("replay exited %d:\n%s", code, stderr.String())
	}
	log := stderr.String()
	for _, want := range []string{
		"replayed 1 dead letters: 1 delivered",
		file + ":2: skipped: origin stream (key 2, created 2026-12-03T08:00:00Z)",
		"skipped 1 dead letters of origin stream",
		"skipping a torn dead-letter line",
		"line=3",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("replay output lacks %q:\n%s", want, log)
		}
	}
	if !strings.Contains(stdout.String(), `"id":"id-1"`) || strings.Count(stdout.String(), "\n") != 1 {
		t.Errorf("replayed to stdout: %q", stdout.String())
	}
}

// TestShutdownWritesFinalCheckpoint: cancelling the daemon as SIGTERM does
// writes a final checkpoint at the last event delivered, after the
// checkpoint keeper's loop stopped and before the daemon is done.
func TestShutdownWritesFinalCheckpoint(t *testing.T) {
	sim := vcsimtest.Start(t)
	state := t.TempDir()
	d := startCore(t, sim.Config(), stdoutEntry, map[string]any{"type": "internal", "provider": "state", "address": state})
	d.waitReady(t)
	sim.PostEx("final", 0, 40)
	waitMessages(t, d, "final", 40, 30*time.Second)
	if code := d.stop(t); code != 0 {
		t.Fatalf("daemon exited %d", code)
	}

	// The newest event printed: every event read was delivered (the
	// shutdown drained them), so the checkpoint must be exactly there.
	var last gateway.Position
	for _, line := range strings.Split(d.stdout.String(), "\n") {
		var ce struct {
			Time time.Time           `json:"time"`
			Data struct{ Key int32 } `json:"data"`
		}
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &ce); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		if p := (gateway.Position{Time: ce.Time, Key: ce.Data.Key}); last.Before(p) {
			last = p
		}
	}
	files, _ := filepath.Glob(filepath.Join(state, "checkpoints", "vcenter-*.json"))
	if len(files) != 1 {
		t.Fatalf("checkpoint files %v", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var cp checkpoint.File
	if err := json.Unmarshal(data, &cp); err != nil {
		t.Fatal(err)
	}
	if cp.Watermark.Key != last.Key || !cp.Watermark.Time.Equal(last.Time) {
		t.Errorf("final checkpoint %+v, want the last delivered event %+v", cp.Watermark, last)
	}

	log := d.stderr.String()
	loopStopped := strings.Index(log, "checkpoint loop stopped")
	final := strings.Index(log, "final checkpoint")
	stopped := strings.Index(log, "vmware-event-router stopped")
	if loopStopped < 0 || final < 0 || stopped < 0 || loopStopped >= final || final >= stopped {
		t.Errorf("shutdown order: loop stopped at %d, final checkpoint at %d, stopped at %d (want that order); log:\n%s",
			loopStopped, final, stopped, tail(log, 3000))
	}
	if !strings.Contains(log[max(final, 0):], fmt.Sprintf("key=%d", last.Key)) {
		t.Errorf("the final checkpoint line does not name key %d", last.Key)
	}
}

// TestUnreadableCheckpointStopsTheDaemon: a checkpoint that exists but
// cannot be read (here a directory in its place) stops the daemon with the
// path and the cause, and is left as it is.
func TestUnreadableCheckpointStopsTheDaemon(t *testing.T) {
	sim := vcsimtest.Start(t)
	state := t.TempDir()
	stateEntry := map[string]any{"type": "internal", "provider": "state", "address": state}
	d := startCore(t, sim.Config(), stdoutEntry, stateEntry)
	var files []string
	d.eventually(t, 30*time.Second, "the initial checkpoint", func() bool {
		files, _ = filepath.Glob(filepath.Join(state, "checkpoints", "vcenter-*.json"))
		return len(files) == 1
	})
	if code := d.stop(t); code != 0 {
		t.Fatalf("daemon exited %d", code)
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(files[0], 0o700); err != nil {
		t.Fatal(err)
	}

	config := writeConfig(t, sim.Config(), stdoutEntry, stateEntry, metricsEntry("127.0.0.1:0"))
	code, log := runToExit(t, config, 30*time.Second)
	if code != 1 || !strings.Contains(log, "reading checkpoint "+files[0]+": is a directory") {
		t.Fatalf("exit %d; log:\n%s", code, tail(log, 3000))
	}
	if fi, err := os.Stat(files[0]); err != nil || !fi.IsDir() {
		t.Errorf("the unreadable checkpoint was touched: %v", err)
	}
	if aside, _ := filepath.Glob(filepath.Join(state, "checkpoints", "*.bad-*")); len(aside) != 0 {
		t.Errorf("moved aside: %v", aside)
	}
}

// TestFullDeadLetterSinkHoldsTheStream: a function that rejects every event
// fills a small dead-letter directory; then the router deletes nothing: the
// delivery waits, the queue fills (the stream is held), the gauge says so;
// as an operator moves files away, every letter arrives, each once.
func TestFullDeadLetterSinkHoldsTheStream(t *testing.T) {
	sim := vcsimtest.Start(t)
	gw, err := faastest.New(faastest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	broken := gw.Deploy("broken", "", map[string]string{"topic": "com.example.full"})
	broken.Fail(400)
	state := t.TempDir()
	stateEntry := map[string]any{"type": "internal", "provider": "state", "address": state,
		"options": map[string]any{"dead_letter_max_size": "1KiB"}}
	d := startCore(t, sim.Config(), openfaasEntry(gw, map[string]any{"queue_size": "2"}), stateEntry)
	d.waitReady(t)
	const n = 20
	sim.PostEx("full", 0, n)

	dlDir := filepath.Join(state, "dead-letter")
	archive := t.TempDir()
	d.eventually(t, 30*time.Second, "a full sink holding the queue", func() bool {
		return d.metric(t, "eventrouter_dead_letter_sink_full") == 1 &&
			d.metric(t, `eventrouter_queue_depth{destination="broken",processor="openfaas"}`) == 2
	})
	if got := len(letterMessages(t, dlDir, archive)); got >= n {
		t.Fatalf("%d letters written while the sink was full", got)
	}
	if calls := len(broken.Calls()); calls >= n {
		t.Fatalf("%d deliveries while the sink was full: the stream was not held", calls)
	}

	// The operator moves rotated files away until every letter is in.
	d.eventually(t, 60*time.Second, "every letter written", func() bool {
		rotated, _ := filepath.Glob(filepath.Join(dlDir, "dead-letter-*.jsonl"))
		for _, f := range rotated {
			if err := os.Rename(f, filepath.Join(archive, filepath.Base(f))); err != nil {
				t.Fatal(err)
			}
		}
		return len(letterMessages(t, dlDir, archive)) >= n
	})
	seen := map[string]int{}
	for _, m := range letterMessages(t, dlDir, archive) {
		seen[m]++
	}
	for i := range n {
		if m := fmt.Sprintf("full-%d", i); seen[m] != 1 {
			t.Errorf("%s dead-lettered %d times", m, seen[m])
		}
	}
	d.eventually(t, 10*time.Second, "the sink no longer full", func() bool {
		return d.metric(t, "eventrouter_dead_letter_sink_full") == 0
	})
	log := d.stderr.String()
	if c := strings.Count(log, `msg="dead-letter sink full`); c < 1 || strings.Contains(log, "removed") {
		t.Errorf("%d full lines logged, or a file was removed", c)
	}
}

// letterMessages returns the data.Message of every dead letter in the
// directories' files (a line being written is skipped as torn). Once no
// letter is being written the count is exact.
func letterMessages(t *testing.T, dirs ...string) []string {
	t.Helper()
	var msgs []string
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "dead-letter*.jsonl"))
		for _, name := range files {
			f, err := os.Open(name)
			if errors.Is(err, os.ErrNotExist) {
				continue // rotated since the glob: counted at the next poll
			}
			if err != nil {
				t.Fatal(err)
			}
			lines, _, err := deadletter.Read(f, name)
			_ = f.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lines {
				var ev lineEvent
				if err := json.Unmarshal(l.Event, &ev); err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, ev.Data.Message)
			}
		}
	}
	return msgs
}
