package deadletter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

func letter(key int32) gateway.DeadLetter {
	ce := fmt.Sprintf(`{"specversion":"1.0","id":"id-%d","source":"https://vc/sdk","type":"com.vmware.event.router/event","subject":"VmPoweredOnEvent","datacontenttype":"application/json","data":{"Key":%d}}`, key, key)
	return gateway.DeadLetter{
		Event:  &gateway.Event{ID: fmt.Sprintf("id-%d", key), Key: key, Time: time.Unix(100, 5).UTC(), Entity: "VirtualMachine:vm-1", Subject: "VmPoweredOnEvent", JSON: []byte(ce)},
		Origin: gateway.OriginProcessor, Processor: "openfaas", Destination: "fn", Reason: "retry_limit",
		Error: "503", Attempts: 20, Time: time.Unix(200, 0),
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// readDir reads every dead-letter file in dir.
func readDir(t *testing.T, dir string) []Line {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "dead-letter*.jsonl"))
	var all []Line
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		lines, torn, err := Read(f, name)
		_ = f.Close()
		if err != nil || len(torn) > 0 {
			t.Fatalf("%s: %v, torn %v", name, err, torn)
		}
		all = append(all, lines...)
	}
	return all
}

func TestWriteReadRotate(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSink(dir, 1000, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := int32(1); i <= 6; i++ {
		if err := s.Write(context.Background(), letter(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rotated, _ := filepath.Glob(filepath.Join(dir, "dead-letter-*.jsonl"))
	if len(rotated) == 0 || len(rotated) > KeepRotated {
		t.Fatalf("rotated files %d, want 1..%d", len(rotated), KeepRotated)
	}
	for _, f := range append(rotated, filepath.Join(dir, FileName)) {
		fi, _ := os.Stat(f)
		if fi.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the cap", f, fi.Size())
		}
	}
	if n := len(readDir(t, dir)); n != 6 {
		t.Errorf("%d letters in the files, want 6", n)
	}
	f, _ := os.Open(filepath.Join(dir, FileName))
	defer func() { _ = f.Close() }()
	lines, _, err := Read(f, FileName)
	if err != nil {
		t.Fatal(err)
	}
	last := lines[len(lines)-1]
	if last.Key != 6 || last.Reason != "retry_limit" || last.Attempts != 20 || last.Destination != "fn" {
		t.Errorf("last line %+v", last)
	}
	ev, err := last.PipelineEvent()
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "id-6" || ev.Key != 6 || ev.Entity != "VirtualMachine:vm-1" || ev.Subject != "VmPoweredOnEvent" {
		t.Errorf("rebuilt event %+v", ev)
	}
}

// TestFullSinkHoldsAndResumes: at (KeepRotated+1) × max size the sink deletes
// nothing; Write waits (says so once: log, gauge, Degraded) until an operator
// moves a file away, then goes on; a Write whose ctx ends returns an error.
func TestFullSinkHoldsAndResumes(t *testing.T) {
	dir := t.TempDir()
	var log testutil.SyncBuffer
	m := metrics.New()
	s, err := NewSink(dir, 1000, slog.New(slog.NewTextHandler(&log, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	s.retry = 5 * time.Millisecond
	// Three ~330-byte letters per file: five files hold 15.
	written := int32(0)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := s.Write(ctx, letter(written+1))
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "dead-letter sink full") {
				t.Fatalf("write on a full sink: %v", err)
			}
			break
		}
		written++
		if written > 100 {
			t.Fatal("the sink never filled up")
		}
	}
	if n := len(readDir(t, dir)); n != int(written) {
		t.Fatalf("%d letters in the files, %d written: letters were deleted", n, written)
	}
	if got := s.Degraded(); !strings.HasPrefix(got, "dead-letter sink full: ") || !strings.Contains(got, dir) ||
		!strings.HasSuffix(got, "move files away to resume") {
		t.Errorf("Degraded() = %q", got)
	}
	if g := promtest.ToFloat64(m.DeadLetterSinkFull); g != 1 {
		t.Errorf("eventrouter_dead_letter_sink_full %v, want 1", g)
	}

	// A waiting Write holds until a rotated file is moved away.
	done := make(chan error, 1)
	go func() { done <- s.Write(context.Background(), letter(written+1)) }()
	select {
	case err := <-done:
		t.Fatalf("Write returned while the sink was full: %v", err)
	default:
	}
	rotated, _ := filepath.Glob(filepath.Join(dir, "dead-letter-*.jsonl"))
	keep := t.TempDir()
	if err := os.Rename(rotated[0], filepath.Join(keep, filepath.Base(rotated[0]))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Write still waiting after space was made")
	}
	if got := s.Degraded(); got != "" {
		t.Errorf("Degraded() = %q after space was made", got)
	}
	if g := promtest.ToFloat64(m.DeadLetterSinkFull); g != 0 {
		t.Errorf("eventrouter_dead_letter_sink_full %v, want 0", g)
	}
	if n := strings.Count(log.String(), "level=ERROR msg=\"dead-letter sink full"); n != 1 {
		t.Errorf("%d full errors logged, want 1:\n%s", n, log.String())
	}
	if n := strings.Count(log.String(), "dead-letter sink has space again"); n != 1 {
		t.Errorf("%d space-again lines logged, want 1", n)
	}
	if strings.Contains(log.String(), "removed") {
		t.Errorf("a file was removed:\n%s", log.String())
	}
}

// TestMovedCurrentFileFreesSpace: moving the current file away (not only a
// rotated one) also makes room; the sink writes to a new current file.
func TestMovedCurrentFileFreesSpace(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewSink(dir, 400, quiet(), nil)
	defer func() { _ = s.Close() }()
	s.retry = 5 * time.Millisecond
	for i := int32(1); i <= KeepRotated+1; i++ {
		if err := s.Write(context.Background(), letter(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Write(ctx, letter(99)); err == nil {
		t.Fatal("a full sink took a letter")
	}
	if err := os.Rename(filepath.Join(dir, FileName), filepath.Join(t.TempDir(), "moved.jsonl")); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), letter(100)); err != nil {
		t.Fatal(err)
	}
	lines := readDir(t, dir)
	if last := lines[len(lines)-1]; last.Key != 100 {
		t.Errorf("last letter in the directory %d, want 100", last.Key)
	}
}

// TestFailedRotationRetries: a rotation that fails loses the sink nothing:
// the next Write rotates and writes.
func TestFailedRotationRetries(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewSink(dir, 400, quiet(), nil)
	defer func() { _ = s.Close() }()
	if err := s.Write(context.Background(), letter(1)); err != nil {
		t.Fatal(err)
	}
	s.rename = func(string, string) error { return errors.New("injected rename failure") }
	if err := s.Write(context.Background(), letter(2)); err == nil {
		t.Fatal("a failed rotation reported success")
	}
	s.rename = os.Rename
	if err := s.Write(context.Background(), letter(3)); err != nil {
		t.Fatalf("the sink stayed dead after a failed rotation: %v", err)
	}
	rotated, _ := filepath.Glob(filepath.Join(dir, "dead-letter-*.jsonl"))
	if len(rotated) != 1 {
		t.Errorf("rotated files %v", rotated)
	}
	var keys []int32
	for _, l := range readDir(t, dir) {
		keys = append(keys, l.Key)
	}
	if fmt.Sprint(keys) != "[1 3]" {
		t.Errorf("letters %v, want [1 3]", keys)
	}
}

// TestTornLine: a crash mid-write leaves a line without its end; Read skips
// it and names it, and the sink writes the next letter on a line of its own.
func TestTornLine(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewSink(dir, 1<<20, quiet(), nil)
	if err := s.Write(context.Background(), letter(1)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	p := filepath.Join(dir, FileName)
	good, _ := os.ReadFile(p)
	torn := good[:len(good)/2]
	if err := os.WriteFile(p, append(append([]byte(nil), good...), torn...), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(p)
	lines, tornLines, err := Read(f, FileName)
	_ = f.Close()
	if err != nil || len(lines) != 1 || fmt.Sprint(tornLines) != "[2]" {
		t.Fatalf("torn last line: %d lines, torn %v, err %v", len(lines), tornLines, err)
	}

	s, _ = NewSink(dir, 1<<20, quiet(), nil)
	if err := s.Write(context.Background(), letter(3)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	f, _ = os.Open(p)
	lines, tornLines, err = Read(f, FileName)
	_ = f.Close()
	if err != nil || len(lines) != 2 || lines[1].Key != 3 || lines[1].LineNo != 3 || fmt.Sprint(tornLines) != "[2]" {
		t.Fatalf("after the next write: %+v, torn %v, err %v", lines, tornLines, err)
	}
}

// TestStreamLetter: an undecodable event's letter has no event, its raw XML
// and its position.
func TestStreamLetter(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewSink(dir, 1<<20, quiet(), nil)
	at := time.Date(2026, 12, 3, 8, 0, 0, 123, time.UTC)
	err := s.Write(context.Background(), gateway.DeadLetter{Origin: gateway.OriginStream, Raw: "<event><key>7</key>",
		Position: gateway.Position{Time: at, Key: 7}, Reason: "undecodable", Error: "xml: unexpected EOF", Attempts: 1, Time: at})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	data, _ := os.ReadFile(filepath.Join(dir, FileName))
	if strings.Contains(string(data), `"event"`) || !strings.Contains(string(data), `"origin":"stream"`) {
		t.Errorf("stream letter %s", data)
	}
	lines := readDir(t, dir)
	if len(lines) != 1 {
		t.Fatalf("lines %+v", lines)
	}
	l := lines[0]
	if l.Origin != gateway.OriginStream || l.Raw != "<event><key>7</key>" || l.Key != 7 || !l.CreatedTime.Equal(at) ||
		l.Reason != "undecodable" || l.Error != "xml: unexpected EOF" {
		t.Errorf("stream letter read back as %+v", l)
	}
}

func TestReadErrorsNameTheLine(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"not json", "\n{\"origin\":\"processor\",\"event\":{}}\nnot json\n", "dl.jsonl:3: not a dead letter"},
		{"no event", "{\"origin\":\"filter\"}\n", "dl.jsonl:1: not a dead letter"},
		{"unknown origin", "{\"origin\":\"x\",\"event\":{}}\n", "dl.jsonl:1: not a dead letter"},
		{"torn in the middle is skipped, garbage after is not", "{\"origin\":\"proc\n{\"origin\":\"filter\",\"event\":{}}\n]\n", "dl.jsonl:3: not a dead letter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Read(strings.NewReader(tt.in), "dl.jsonl")
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err %v", err)
			}
		})
	}
}
