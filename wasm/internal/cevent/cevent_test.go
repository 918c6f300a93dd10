package cevent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/cevent"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/wasmtest"
)

var orig = &gateway.Event{Stream: "vc-2", Time: time.Unix(1700000000, 0), Key: 42, Entity: "VirtualMachine:vm-56"}

func TestParse(t *testing.T) {
	good := string(wasmtest.Event("VmPoweredOffEvent", "test-01"))
	for _, tc := range []struct {
		name, json, wantErr string
	}{
		{"router event", good, ""},
		{"minimal", `{"specversion":"1.0","id":"1","source":"/s","type":"t"}`, ""},
		{"escaped subject", `{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"Vm\u0050oweredOn"}`, ""},
		{"extensions", `{"specversion":"1.0","id":"1","source":"/s","type":"t","team":"ops","prio":3,"ok":true}`, ""},
		{"data_base64", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"aGk="}`, ""},
		{"not json", `hello`, "not a JSON object"},
		{"array", `[1]`, "not a JSON object"},
		{"truncated", good[:len(good)-1], "expected ',' or '}'"},
		{"trailing", good + "x", "after the event's closing brace"},
		{"no id", `{"specversion":"1.0","source":"/s","type":"t"}`, "id: required"},
		{"empty id", `{"specversion":"1.0","id":" ","source":"/s","type":"t"}`, "id: must be"},
		{"no specversion", `{"id":"1","source":"/s","type":"t"}`, "specversion: required"},
		{"old specversion", `{"specversion":"0.3","id":"1","source":"/s","type":"t"}`, `must be "1.0"`},
		{"no type", `{"specversion":"1.0","id":"1","source":"/s"}`, "type: required"},
		{"bad source", `{"specversion":"1.0","id":"1","source":"%zz","type":"t"}`, "source:"},
		{"number id", `{"specversion":"1.0","id":1,"source":"/s","type":"t"}`, "must be a string"},
		{"empty subject", `{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":""}`, "subject:"},
		{"bad time", `{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"}`, "time:"},
		{"bad media type", `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"a/b;;"}`, "datacontenttype:"},
		{"relative dataschema", `{"specversion":"1.0","id":"1","source":"/s","type":"t","dataschema":"/x"}`, "dataschema:"},
		{"duplicate", `{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}`, "appears twice"},
		{"bad extension name", `{"specversion":"1.0","id":"1","source":"/s","type":"t","my-ext":"x"}`, "lower-case ASCII letters and digits"},
		{"object extension", `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{}}`, "must be a string, a boolean"},
		{"float extension", `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":1.5}`, "int32"},
		{"null extension", `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":null}`, "must be a string"},
		{"text data", `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi"}`, ""},
		{"object data as text", `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":{}}`, "must be a JSON string"},
		{"upper-case extension", `{"specversion":"1.0","id":"1","source":"/s","type":"t","Team":"x"}`, "lower-case"},
		{"source normalised", `{"specversion":"1.0","id":"1","source":"a b","type":"t"}`, ""},
		{"both data", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"aGk="}`, "both data"},
		{"bad data", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":tru}}`, "invalid character"},
		{"control char", "{\"specversion\":\"1.0\",\"id\":\"1\x01\",\"source\":\"/s\",\"type\":\"t\"}", "control character"},
		{"invalid utf8", "{\"specversion\":\"1.0\",\"id\":\"\xff\",\"source\":\"/s\",\"type\":\"t\"}", "UTF-8"},
		{"utf8 subject", "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"subject\":\"VM \u00e9t\u00e9 \U0001F600\"}", ""},
		{"utf8 in data", "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"data\":{\"n\u00e4me\":[\"\u65e5\u672c\"]}}", ""},
		{"invalid utf8 in data", "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"data\":{\"a\":[\"x\xc3\"]}}", "UTF-8"},
		{"surrogate in utf8", "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"subject\":\"\xed\xa0\x80\"}", "UTF-8"},
		{"utf8 outside strings", "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"data\":1\u00a0}", "expected ',' or '}'"},
		{"deep", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":` + strings.Repeat("[", 10002) + strings.Repeat("]", 10002) + `}`, "nested too deeply"},
		{"too large", `{"data":"` + strings.Repeat("x", gateway.MaxEventSize) + `"}`, "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := cevent.Parse([]byte(tc.json), orig)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, err := gateway.ParseReplacement([]byte(tc.json), orig)
			if err != nil {
				t.Fatalf("the SDK refuses what Parse accepts: %v", err)
			}
			if ev.ID != want.ID || ev.Source != want.Source || ev.Subject != want.Subject ||
				!ev.Time.Equal(want.Time) || ev.Key != want.Key || ev.Entity != want.Entity || ev.Stream != want.Stream || string(ev.JSON) != tc.json {
				t.Fatalf("Parse = %+v, ParseReplacement = %+v", ev, want)
			}
		})
	}
}

// TestParseKeepsData checks that Parse takes the bytes it is given as the
// event's JSON instead of copying them (the host copies a filter's output
// once, out of guest memory).
func TestParseKeepsData(t *testing.T) {
	data := wasmtest.Event("VmStopped", "vm-1")
	ev, err := cevent.Parse(data, orig)
	if err != nil {
		t.Fatal(err)
	}
	if &ev.JSON[0] != &data[0] || len(ev.JSON) != len(data) {
		t.Fatal("the event's JSON is a copy of the data")
	}
	if ev.Stream != "vc-2" {
		t.Fatalf("Stream = %q, want the original's", ev.Stream)
	}
}

// FuzzParse checks that Parse is never looser than the SDK-based
// gateway.ParseReplacement and agrees with it on what it extracts.
func FuzzParse(f *testing.F) {
	f.Add(wasmtest.Event("VmPoweredOffEvent", "test-01"))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"a\u00e9","x":-5,"y":true,"data_base64":"aGk="}`))
	f.Add([]byte(`{"data":{"a":[1,2.5e3,null,"x"]},"specversion":"1.0","id":"1","source":"http://h/p?q","type":"t","time":"2020-02-11T21:29:54.9Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := cevent.Parse(data, orig)
		if err != nil {
			return
		}
		want, err := gateway.ParseReplacement(data, orig)
		if err != nil {
			t.Fatalf("Parse accepts what the SDK refuses (%v): %q", err, data)
		}
		if ev.ID != want.ID || ev.Source != want.Source || ev.Subject != want.Subject {
			t.Fatalf("Parse = %q %q %q, SDK = %q %q %q", ev.ID, ev.Source, ev.Subject, want.ID, want.Source, want.Subject)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	data := wasmtest.Event("VmPoweredOffEvent", "test-01")
	b.Run("cevent", func(b *testing.B) {
		for b.Loop() {
			if _, err := cevent.Parse(data, orig); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		for b.Loop() {
			if _, err := gateway.ParseReplacement(data, orig); err != nil {
				b.Fatal(err)
			}
		}
	})
}
