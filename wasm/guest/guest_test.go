//go:build !wasip1

package guest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vmware-samples/vmware-event-router/wasm/guest"
)

const ev = `{"id":"1","source":"/s","specversion":"1.0","type":"t","subject":"VmPoweredOffEvent",
 "data":{"Vm":{"Name":"test-\u00e901","Vm":{"Type":"VirtualMachine"}},"List":[1,{"a":"}"}],"Ds":null,"Esc":"a\"b"}}`

func TestAccessors(t *testing.T) {
	e := guest.NewEvent([]byte(ev))
	for _, tc := range []struct {
		path []string
		want string
		ok   bool
	}{
		{[]string{"subject"}, "VmPoweredOffEvent", true},
		{[]string{"data", "Vm", "Name"}, "test-é01", true},
		{[]string{"data", "Vm", "Vm", "Type"}, "VirtualMachine", true},
		{[]string{"data", "Esc"}, `a"b`, true},
		{[]string{"data", "Ds"}, "", false},
		{[]string{"data", "List"}, "", false},
		{[]string{"data", "Missing"}, "", false},
		{[]string{"nope", "x"}, "", false},
	} {
		got, ok := e.String(tc.path...)
		if got != tc.want || ok != tc.ok {
			t.Errorf("String(%v) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	if e.Subject() != "VmPoweredOffEvent" {
		t.Fatal(e.Subject())
	}
}

func TestWith(t *testing.T) {
	e := guest.NewEvent([]byte(ev))
	for _, tc := range []struct{ attr, value string }{
		{"subject", "VmStopped"},
		{"team", `ops "blue"` + "\n"},
	} {
		out, err := e.With(tc.attr, tc.value)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("With(%q) produced invalid JSON: %v\n%s", tc.attr, err, out)
		}
		if m[tc.attr] != tc.value || m["id"] != "1" {
			t.Fatalf("With(%q) = %s", tc.attr, out)
		}
	}
	if out, _ := guest.NewEvent([]byte(`{}`)).With("a", "b"); string(out) != `{"a":"b"}` {
		t.Fatalf("With on {} = %s", out)
	}
}

func TestInvoke(t *testing.T) {
	guest.OnInit(func(cfg string) error {
		if cfg == "bad" {
			return errors.New("bad config")
		}
		return nil
	})
	guest.Handle(func(e *guest.Event) guest.Result {
		switch name, _ := e.String("data", "Vm", "Name"); {
		case strings.HasPrefix(name, guest.Config()):
			return guest.Drop()
		case name == "panic":
			panic("boom")
		case name == "fail":
			return guest.Fail(errors.New("cannot decide"))
		case name == "rename":
			out, _ := e.With("subject", "Renamed")
			return guest.Replace(out)
		}
		return guest.Pass()
	})
	event := func(vm string) []byte {
		return []byte(`{"subject":"S","data":{"Vm":{"Name":"` + vm + `"}}}`)
	}
	for _, tc := range []struct {
		vm, cfg, verdict, msg string
	}{
		{"test-1", "test-", "drop", ""},
		{"prod-1", "test-", "pass", ""},
		{"panic", "test-", "error", "panic: boom"},
		{"fail", "test-", "error", "cannot decide"},
		{"rename", "test-", "replace", `"subject":"Renamed"`},
		{"x", "bad", "error", "evr_init returned 1: bad config"},
	} {
		v, out, err := guest.Invoke(event(tc.vm), tc.cfg)
		if v != tc.verdict {
			t.Fatalf("%s: verdict %s (%v), want %s", tc.vm, v, err, tc.verdict)
		}
		if got := string(out) + errString(err); tc.msg != "" && !strings.Contains(got, tc.msg) {
			t.Fatalf("%s: got %q, want %q", tc.vm, got, tc.msg)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestWithReusesReplacement: a replacement built by With is reused by the
// next event's With once the router copied it, so a filter rewriting every
// event allocates nothing of its own; a buffer of the handler's is never
// reused.
func TestWithReusesReplacement(t *testing.T) {
	own := []byte(`{"specversion":"1.0","id":"own","source":"/s","type":"t"}`)
	guest.OnInit(nil)
	guest.Handle(func(e *guest.Event) guest.Result {
		if bytes.Contains(e.JSON(), []byte(`"own"`)) {
			return guest.Replace(own)
		}
		out, err := e.With("team", "ops")
		if err != nil {
			return guest.Fail(err)
		}
		return guest.Replace(out)
	})
	event := func(vm string) []byte {
		return []byte(`{"subject":"S","data":{"Vm":{"Name":"` + vm + `"}}}`)
	}
	for _, vm := range []string{"a", "a-longer-name", "b", "own", "c"} {
		v, out, err := guest.Invoke(event(vm), "")
		want := `{"team":"ops","subject":"S","data":{"Vm":{"Name":"` + vm + `"}}}`
		if vm == "own" {
			want = string(own)
		}
		if v != "replace" || string(out) != want {
			t.Fatalf("%s: %s %s (%v), want %s", vm, v, out, err, want)
		}
	}
	if string(own) != `{"specversion":"1.0","id":"own","source":"/s","type":"t"}` {
		t.Fatalf("the handler's own buffer was overwritten: %s", own)
	}
	in := event("steady")
	// One allocation per call: the stand-in host's copy of the output.
	if n := testing.AllocsPerRun(100, func() { _, _, _ = guest.Invoke(in, "") }); n > 1 {
		t.Fatalf("%v allocations per event, want 1 (the host's copy)", n)
	}
}
