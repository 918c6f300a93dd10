package cesdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Want is what both SDKs should make of one request: read it as the
// CloudEvent Event (structured JSON), or refuse it (Event nil).
type Want struct {
	Event []byte
}

// Check decodes reqs with both SDKs (one node process for the whole
// batch) and fails the test for each request an SDK misreads: one it
// should read but refuses or reads as another event, one it should refuse
// but reads. name prefixes the messages.
func Check(t testing.TB, name string, reqs []Request, want []Want) {
	t.Helper()
	if len(reqs) != len(want) {
		t.Fatalf("cesdk.Check: %d requests, %d wants", len(reqs), len(want))
	}
	for _, sdk := range []string{"sdk-go", "js"} {
		for i, r := range Decoders[sdk](t, reqs...) {
			switch w := want[i]; {
			case w.Event == nil && r.Err == nil:
				t.Errorf("%s: request %d: %s read %v, want it refused", name, i, sdk, *r.Event)
			case w.Event != nil && r.Err != nil:
				t.Errorf("%s: request %d: %s refused it: %v", name, i, sdk, r.Err)
			case w.Event != nil:
				if err := Same(w.Event, r.Event); err != nil {
					t.Errorf("%s: request %d: %s: %v", name, i, sdk, err)
				}
			}
		}
	}
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
