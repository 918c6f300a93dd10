package main

// Tests of the router's state directory at the daemon level: dead letters
// that replay cannot send, and the shutdown order that writes the final
// checkpoint.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/deadletter"
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
