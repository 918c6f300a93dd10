package deadletter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

func letter(key int32) gateway.DeadLetter {
	ce := fmt.Sprintf(`{"specversion":"1.0","id":"id-%d","source":"https://vc/sdk","type":"com.vmware.event.router/event","subject":"VmPoweredOnEvent","datacontenttype":"application/json","data":{"Key":%d}}`, key, key)
	return gateway.DeadLetter{
		Event:  &gateway.Event{ID: fmt.Sprintf("id-%d", key), Key: key, Time: time.Unix(100, 5).UTC(), Entity: "VirtualMachine:vm-1", Subject: "VmPoweredOnEvent", JSON: []byte(ce)},
		Origin: gateway.OriginProcessor, Processor: "openfaas", Destination: "fn", Reason: "retry_limit",
		Error: "503", Attempts: 20, Time: time.Unix(200, 0),
	}
}

func TestWriteReadRotate(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSink(dir, 1000, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for i := int32(1); i <= 20; i++ {
		if err := s.Write(context.Background(), letter(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rotated, _ := filepath.Glob(filepath.Join(dir, "dead-letter-*.jsonl"))
	if len(rotated) != KeepRotated {
		t.Fatalf("rotated files %d, want %d (the cap)", len(rotated), KeepRotated)
	}
	for _, f := range append(rotated, filepath.Join(dir, FileName)) {
		fi, _ := os.Stat(f)
		if fi.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the cap", f, fi.Size())
		}
	}
	f, _ := os.Open(filepath.Join(dir, FileName))
	defer func() { _ = f.Close() }()
	lines, err := Read(f, FileName)
	if err != nil {
		t.Fatal(err)
	}
	last := lines[len(lines)-1]
	if last.Key != 20 || last.Reason != "retry_limit" || last.Attempts != 20 || last.Destination != "fn" {
		t.Errorf("last line %+v", last)
	}
	ev, err := last.PipelineEvent()
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "id-20" || ev.Key != 20 || ev.Entity != "VirtualMachine:vm-1" || ev.Subject != "VmPoweredOnEvent" {
		t.Errorf("rebuilt event %+v", ev)
	}
}

func TestReadErrorsNameTheLine(t *testing.T) {
	_, err := Read(strings.NewReader("\n{\"origin\":\"processor\",\"event\":{}}\nnot json\n"), "dl.jsonl")
	if err == nil || !strings.HasPrefix(err.Error(), "dl.jsonl:3: not a dead letter") {
		t.Fatalf("err %v", err)
	}
}
