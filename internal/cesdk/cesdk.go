// Package cesdk decodes captured HTTP requests the way a function author's
// CloudEvents SDK would, so tests can assert what a receiver built on an SDK
// makes of a request: the event it reads, or the error it refuses it with.
//
// DecodeGo uses sdk-go v2 (cehttp.NewMessageFromHttpRequest, then
// binding.ToEvent). DecodeJS uses the official JavaScript SDK
// (HTTP.toEvent({headers, body}) from npm cloudevents, pinned by
// package-lock.json in this directory and installed into node_modules by
// scripts/test-deps.sh); it runs node once per call on a whole batch of
// requests, because node's start-up costs far more than decoding.
package cesdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// jsVersion is the version of npm cloudevents that package.json pins.
const jsVersion = "10.0.0"

// Request is a captured HTTP request.
type Request struct {
	Method string // POST when empty
	Header http.Header
	Body   []byte
}

// Event is what an SDK read from a request. Time is as the SDK renders it
// (RFC 3339); Data is the event's data as JSON (what the SDK parsed, or
// the raw bytes it kept), nil when the event has none.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	Source          string          `json:"source"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// Result is one request's outcome: the event the SDK read, or the error
// it refused the request with (Err non-nil, Event nil).
type Result struct {
	Event *Event
	Err   error
}

// Decoder decodes a batch of requests, one Result per request in order.
// DecodeGo and DecodeJS are Decoders, so a test can run the same
// assertions with each.
type Decoder func(t testing.TB, reqs ...Request) []Result

// Decoders names both SDKs' decoders.
var Decoders = map[string]Decoder{"sdk-go": DecodeGo, "js": DecodeJS}

// DecodeGo decodes each request with sdk-go v2 as a receiver using its
// HTTP protocol binding does.
func DecodeGo(t testing.TB, reqs ...Request) []Result {
	t.Helper()
	out := make([]Result, len(reqs))
	for i, r := range reqs {
		hr, err := r.http()
		if err != nil {
			t.Fatalf("cesdk: request %d: %v", i, err)
		}
		msg := cehttp.NewMessageFromHttpRequest(hr)
		ev, err := binding.ToEvent(context.Background(), msg)
		_ = msg.Finish(nil)
		if err != nil {
			out[i] = Result{Err: err}
			continue
		}
		e := &Event{
			SpecVersion: ev.SpecVersion(), ID: ev.ID(), Type: ev.Type(), Source: ev.Source(),
			Subject: ev.Subject(), DataContentType: ev.DataContentType(),
		}
		if !ev.Time().IsZero() {
			e.Time = ev.Time().Format(time.RFC3339Nano)
		}
		if d := ev.Data(); d != nil {
			e.Data = json.RawMessage(d)
		}
		out[i] = Result{Event: e}
	}
	return out
}

func (r Request) http() (*http.Request, error) {
	m := r.Method
	if m == "" {
		m = http.MethodPost
	}
	hr, err := http.NewRequest(m, "http://function.invalid/", bytes.NewReader(r.Body))
	if err != nil {
		return nil, err
	}
	hr.Header = r.Header.Clone()
	return hr, nil
}

// jsRequest is one request as decode.js reads it: headers as node's http
// server presents them (lower-case names, repeated values joined by ", "),
// the body as a string, as in the SDK's own receiver examples.
type jsRequest struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

type jsResult struct {
	Event *Event  `json:"event"`
	Error *string `json:"error"`
}

// DecodeJS decodes each request with the CloudEvents JavaScript SDK, in
// one node process. A missing node or SDK fails the test (run make
// test-deps); it never skips.
func DecodeJS(t testing.TB, reqs ...Request) []Result {
	t.Helper()
	dir := packageDir(t)
	checkJS(t, dir)
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	for _, r := range reqs {
		h := make(map[string]string, len(r.Header))
		for k, v := range r.Header {
			h[strings.ToLower(k)] = strings.Join(v, ", ")
		}
		if err := enc.Encode(jsRequest{Headers: h, Body: string(r.Body)}); err != nil {
			t.Fatalf("cesdk: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "decode.js"))
	cmd.Dir = dir
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("cesdk: node decode.js: %v: %s", err, stderr.String())
	}
	dec := json.NewDecoder(bytes.NewReader(stdout))
	out := make([]Result, 0, len(reqs))
	for range reqs {
		var r jsResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("cesdk: reading decode.js output %q: %v", stdout, err)
		}
		switch {
		case r.Error != nil:
			out = append(out, Result{Err: fmt.Errorf("%s", *r.Error)})
		case r.Event != nil:
			if string(r.Event.Data) == "null" {
				r.Event.Data = nil
			}
			out = append(out, Result{Event: r.Event})
		default:
			t.Fatalf("cesdk: decode.js wrote neither event nor error: %s", stdout)
		}
	}
	return out
}

// packageDir is this package's source directory, where decode.js and
// node_modules are, whichever package's test calls.
func packageDir(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cesdk: cannot locate the package directory")
	}
	return filepath.Dir(file)
}

// checkJS fails the test with what to do when node or the pinned SDK is
// missing or stale.
func checkJS(t testing.TB, dir string) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("cesdk: node is not on PATH (the JavaScript SDK tests need it): run make test-deps")
	}
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "cloudevents", "package.json"))
	if err != nil {
		t.Fatalf("cesdk: npm cloudevents is not installed in %s: run make test-deps", dir)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil || pkg.Version != jsVersion {
		t.Fatalf("cesdk: npm cloudevents in %s is %q, want %s: run make test-deps", dir, pkg.Version, jsVersion)
	}
}
