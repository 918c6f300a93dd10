package cloudevents

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/internal/cesdk"
)

// TestSDKsDecode: the requests of both modes, as the sink received them,
// decoded by sdk-go and by the CloudEvents JavaScript SDK (npm), each read
// the event sent, with the vSphere event as data.
func TestSDKsDecode(t *testing.T) {
	t.Parallel()
	ev := newEvent(t, "VmPoweredOffEvent", "vm-1", 3)
	var sent struct {
		Data any `json:"data"`
	}
	if err := json.Unmarshal(ev.JSON, &sent); err != nil {
		t.Fatal(err)
	}
	modes := []string{ModeBinary, ModeStructured}
	var reqs []cesdk.Request
	for _, mode := range modes {
		req, _ := deliverOnce(t, mode, ev)
		reqs = append(reqs, cesdk.Request{Header: req.header, Body: req.body})
	}
	for sdk, decode := range cesdk.Decoders {
		wantTime := ev.Time
		if sdk == "js" {
			// The JavaScript SDK keeps time as a JS Date: milliseconds.
			wantTime = wantTime.Truncate(time.Millisecond)
		}
		for i, res := range decode(t, reqs...) {
			e := res.Event
			if res.Err != nil || e == nil {
				t.Errorf("%s, %s mode: refused: %v", sdk, modes[i], res.Err)
				continue
			}
			tm, err := time.Parse(time.RFC3339Nano, e.Time)
			if e.SpecVersion != "1.0" || e.ID != ev.ID || e.Source != ev.Source || e.Subject != ev.Subject ||
				e.Type != gateway.EventType || err != nil || !tm.Equal(wantTime) {
				t.Errorf("%s, %s mode: read %+v, want the event sent %s", sdk, modes[i], e, ev.JSON)
			}
			var data any
			if err := json.Unmarshal(e.Data, &data); err != nil || !jsonEqual(data, sent.Data) {
				t.Errorf("%s, %s mode: data %s, want the vSphere event", sdk, modes[i], e.Data)
			}
		}
	}
}
