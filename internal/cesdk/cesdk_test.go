package cesdk

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

const structured = `{"specversion":"1.0","id":"42","type":"com.vmware.event.router/event","source":"https://vc.example/sdk",` +
	`"subject":"VmPoweredOnEvent","time":"2026-12-03T12:00:00Z","datacontenttype":"application/json","data":{"Key":42,"FullFormattedMessage":"on"}}`

const data = `{"Key":42,"FullFormattedMessage":"on"}`

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// TestDecoders runs both SDKs on requests whose reading is known: the
// structured and binary content modes are read as the same event, plain
// JSON is refused, and the first round's mix (ce-* headers beside a
// structured body, no ce-specversion) is refused by sdk-go and misread by
// the JavaScript SDK, the defect this package exists to catch.
func TestDecoders(t *testing.T) {
	reqs := []Request{
		{Header: header("Content-Type", "application/cloudevents+json"), Body: []byte(structured)},
		{Header: header("Content-Type", "application/json", "Ce-Specversion", "1.0", "Ce-Id", "42",
			"Ce-Type", "com.vmware.event.router/event", "Ce-Source", "https://vc.example/sdk",
			"Ce-Subject", "VmPoweredOnEvent", "Ce-Time", "2026-12-03T12:00:00Z"), Body: []byte(data)},
		{Header: header("Content-Type", "application/json"), Body: []byte(structured)},
		{Header: header("Content-Type", "application/json", "Ce-Id", "42",
			"Ce-Type", "com.vmware.event.router/event", "Ce-Source", "https://vc.example/sdk"), Body: []byte(structured)},
	}
	for name, decode := range Decoders {
		t.Run(name, func(t *testing.T) {
			got := decode(t, reqs...)
			if len(got) != len(reqs) {
				t.Fatalf("%d results for %d requests", len(got), len(reqs))
			}
			for i, mode := range []string{"structured", "binary"} {
				r := got[i]
				if r.Err != nil {
					t.Fatalf("%s: refused: %v", mode, r.Err)
				}
				e := r.Event
				if e.SpecVersion != "1.0" || e.ID != "42" || e.Type != "com.vmware.event.router/event" ||
					e.Source != "https://vc.example/sdk" || e.Subject != "VmPoweredOnEvent" ||
					!strings.HasPrefix(e.Time, "2026-12-03T12:00:00") || e.DataContentType != "application/json" {
					t.Errorf("%s: attributes %+v", mode, *e)
				}
				if !jsonEqual(t, e.Data, data) {
					t.Errorf("%s: data %s, want %s", mode, e.Data, data)
				}
			}
			if got[2].Err == nil {
				t.Errorf("plain JSON: read as %+v, want refused", *got[2].Event)
			}
			switch r := got[3]; {
			case name == "sdk-go" && r.Err == nil:
				t.Errorf("ce-* beside a structured body: sdk-go read %+v, want refused", *r.Event)
			case name == "js" && (r.Err != nil || !jsonEqual(t, r.Event.Data, structured)):
				t.Errorf("ce-* beside a structured body: js got %+v, want the whole event as data (the misreading)", r)
			}
		})
	}
}

func jsonEqual(t *testing.T, a []byte, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		return false
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
