package cesdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Want is what a request should carry: the CloudEvent Event (structured
// JSON) in content mode Mode. The modes are those of CloudEvents' HTTP
// binding plus plain JSON:
//   - "structured": Content-Type application/cloudevents+json, the body
//     Event byte for byte, no ce-* header; both SDKs read Event.
//   - "binary": ce-specversion and the other attributes as ce-* headers,
//     the data as the body; both SDKs read Event.
//   - "json": Content-Type application/json, the body Event byte for byte,
//     no ce-* header; both SDKs refuse it (a function parses the body as
//     JSON), rather than misread it.
type Want struct {
	Mode  string
	Event []byte
	Label string // names the request in messages ("request N" without)
}

func (w Want) label(i int) string {
	if w.Label != "" {
		return w.Label + " (" + w.Mode + ")"
	}
	return fmt.Sprintf("request %d (%s)", i, w.Mode)
}

// Check checks each request's shape for its mode and decodes reqs with
// both SDKs (one node process for the whole batch), failing the test for
// each request an SDK misreads: refuses or reads as another event where it
// should read Event, reads where it should refuse. name prefixes the
// messages.
func Check(t testing.TB, name string, reqs []Request, want []Want) {
	t.Helper()
	if len(reqs) != len(want) {
		t.Fatalf("cesdk.Check: %d requests, %d wants", len(reqs), len(want))
	}
	for i, r := range reqs {
		if err := shape(r, want[i]); err != nil {
			t.Errorf("%s: %s: %v", name, want[i].label(i), err)
		}
	}
	for _, sdk := range []string{"sdk-go", "js"} {
		for i, r := range Decoders[sdk](t, reqs...) {
			w := want[i]
			switch {
			case w.Mode == "json" && r.Err == nil:
				t.Errorf("%s: %s: %s read %v, want it refused", name, w.label(i), sdk, *r.Event)
			case w.Mode != "json" && r.Err != nil:
				t.Errorf("%s: %s: %s refused it: %v", name, w.label(i), sdk, r.Err)
			case w.Mode != "json":
				if err := Same(w.Event, r.Event); err != nil {
					t.Errorf("%s: %s: %s: %v", name, w.label(i), sdk, err)
				}
			}
		}
	}
}

// shape checks what the SDKs do not: the Content-Type, that the body is
// the event byte for byte, and no ce-* header beside a structured body
// (an SDK would read the whole event as data, or refuse it).
func shape(r Request, w Want) error {
	var errs []error
	ct := r.Header.Get("Content-Type")
	switch w.Mode {
	case "json", "structured":
		want := "application/json"
		if w.Mode == "structured" {
			want = "application/cloudevents+json"
		}
		if ct != want {
			errs = append(errs, fmt.Errorf("Content-Type %q, want %q", ct, want))
		}
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "ce-") {
				errs = append(errs, fmt.Errorf("header %s beside a structured body", k))
			}
		}
		if !bytes.Equal(r.Body, w.Event) {
			errs = append(errs, fmt.Errorf("body is not the event byte for byte:\n got %s\nwant %s", r.Body, w.Event))
		}
	case "binary":
		if v := r.Header.Get("Ce-Specversion"); v != "1.0" {
			errs = append(errs, fmt.Errorf("ce-specversion %q, want 1.0", v))
		}
	default:
		errs = append(errs, fmt.Errorf("cesdk: unknown mode %q", w.Mode))
	}
	return errors.Join(errs...)
}

// Same reports how got differs from the CloudEvent in structured JSON,
// or nil: the same specversion, id, type, source, subject and
// datacontenttype, the same time (to the millisecond, as the JavaScript
// SDK keeps it), and the same data (compared as JSON values).
func Same(structured []byte, got *Event) error {
	var want Event
	if err := json.Unmarshal(structured, &want); err != nil {
		return fmt.Errorf("cesdk: the wanted event: %w", err)
	}
	var errs []error
	for _, a := range [][3]string{
		{"specversion", want.SpecVersion, got.SpecVersion}, {"id", want.ID, got.ID},
		{"type", want.Type, got.Type}, {"source", want.Source, got.Source},
		{"subject", want.Subject, got.Subject}, {"datacontenttype", want.DataContentType, got.DataContentType},
	} {
		if a[1] != a[2] {
			errs = append(errs, fmt.Errorf("%s %q, want %q", a[0], a[2], a[1]))
		}
	}
	if !sameTime(want.Time, got.Time) {
		errs = append(errs, fmt.Errorf("time %q, want %q", got.Time, want.Time))
	}
	if !sameJSON(want.Data, got.Data) {
		errs = append(errs, fmt.Errorf("data %s, want %s", got.Data, want.Data))
	}
	return errors.Join(errs...)
}

func sameTime(want, got string) bool {
	if want == "" || got == "" {
		return want == got
	}
	w, err1 := time.Parse(time.RFC3339Nano, want)
	g, err2 := time.Parse(time.RFC3339Nano, got)
	return err1 == nil && err2 == nil && (g.Equal(w) || g.Equal(w.Truncate(time.Millisecond)))
}

func sameJSON(a, b []byte) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
