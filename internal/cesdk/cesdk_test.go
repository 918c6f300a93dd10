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
				if err := Same([]byte(structured), r.Event); err != nil {
					t.Errorf("%s: %v", mode, err)
				}
			}
			if got[2].Err == nil {
				t.Errorf("plain JSON: read as %v, want refused", *got[2].Event)
			}
			switch r := got[3]; {
			case name == "sdk-go" && r.Err == nil:
				t.Errorf("ce-* beside a structured body: sdk-go read %v, want refused", *r.Event)
			case name == "js" && (r.Err != nil || !sameJSON(r.Event.Data, []byte(structured))):
				t.Errorf("ce-* beside a structured body: js got %v (error %v), want the whole event as data (the misreading)", r.Event, r.Err)
			}
		})
	}
}

// TestSame: Same tells apart what the tests must tell apart.
func TestSame(t *testing.T) {
	var ev Event
	if err := json.Unmarshal([]byte(structured), &ev); err != nil {
		t.Fatal(err)
	}
	if err := Same([]byte(structured), &ev); err != nil {
		t.Fatalf("an event differs from itself: %v", err)
	}
	ms := ev
	ms.Time = "2026-12-03T12:00:00.000Z"
	if err := Same([]byte(structured), &ms); err != nil {
		t.Errorf("the time to the millisecond differs: %v", err)
	}
	for name, mutate := range map[string]func(*Event){
		"id":      func(e *Event) { e.ID = "43" },
		"subject": func(e *Event) { e.Subject = "" },
		"time":    func(e *Event) { e.Time = "2026-12-03T12:00:01Z" },
		"data":    func(e *Event) { e.Data = json.RawMessage(structured) },
		"no data": func(e *Event) { e.Data = nil },
	} {
		e := ev
		mutate(&e)
		if err := Same([]byte(structured), &e); err == nil || !strings.Contains(err.Error(), strings.Fields(name)[len(strings.Fields(name))-1]) {
			t.Errorf("%s changed: Same = %v", name, err)
		}
	}
}

// TestShape: what the SDKs let pass but Check must not.
func TestShape(t *testing.T) {
	ev := []byte(structured)
	for _, tc := range []struct {
		name string
		req  Request
		want Want
		err  string // "" when the shape is right
	}{
		{"json", Request{Header: header("Content-Type", "application/json"), Body: ev}, Want{Mode: "json", Event: ev}, ""},
		{"structured", Request{Header: header("Content-Type", "application/cloudevents+json"), Body: ev}, Want{Mode: "structured", Event: ev}, ""},
		{"binary", Request{Header: header("Content-Type", "application/json", "Ce-Specversion", "1.0"), Body: []byte(data)}, Want{Mode: "binary", Event: ev}, ""},
		{"ce-id beside a structured body", Request{Header: header("Content-Type", "application/cloudevents+json", "Ce-Id", "42"), Body: ev},
			Want{Mode: "structured", Event: ev}, "header Ce-Id beside a structured body"},
		{"json as cloudevents+json", Request{Header: header("Content-Type", "application/cloudevents+json"), Body: ev},
			Want{Mode: "json", Event: ev}, `Content-Type "application/cloudevents+json", want "application/json"`},
		{"body re-encoded", Request{Header: header("Content-Type", "application/json"), Body: []byte(" " + structured)},
			Want{Mode: "json", Event: ev}, "body is not the event byte for byte"},
		{"binary without specversion", Request{Header: header("Content-Type", "application/json", "Ce-Id", "42"), Body: []byte(data)},
			Want{Mode: "binary", Event: ev}, `ce-specversion "", want 1.0`},
	} {
		err := shape(tc.req, tc.want)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: shape = %v, want %q", tc.name, err, tc.err)
		}
	}
}
