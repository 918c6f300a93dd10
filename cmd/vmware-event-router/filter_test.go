package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// examplePath returns a committed example filter module.
func examplePath(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "examples", "filters", dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("example fixture missing: %v", err)
	}
	return p
}

const (
	offEvent = `{"id":"1","source":"https://vc/sdk","specversion":"1.0","type":"com.vmware.event.router/event","subject":"VmPoweredOffEvent","data":{}}`
	onEvent  = `{"id":"2","source":"https://vc/sdk","specversion":"1.0","type":"com.vmware.event.router/event","subject":"VmPoweredOnEvent","data":{}}`
)

func TestFilterCommand(t *testing.T) {
	drop := examplePath(t, "drop-powered-off", "drop-powered-off.wasm")
	subjectMap := examplePath(t, "subject-map", "subject-map.wasm")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.wasm")
	if err := os.WriteFile(garbage, []byte("not wasm"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.wasm")
	if err := os.WriteFile(empty, []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	events := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(events, []byte(offEvent+"\n\n"+onEvent+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		args      []string
		stdin     string
		code      int
		out, err  string
		outAbsent string
	}{
		{"drop from file", []string{"-wasm", drop, events}, "", 0,
			"drop\npass\t" + onEvent + "\n", "", ""},
		{"drop from stdin", []string{"-wasm", drop}, onEvent + "\n" + offEvent + "\n", 0,
			"pass\t" + onEvent + "\ndrop\n", "", ""},
		{"rewrite", []string{"-wasm", subjectMap, "-filter-config", "VmPoweredOffEvent=VmStopped"}, offEvent + "\n" + onEvent + "\n", 0,
			"replace\t" + strings.Replace(offEvent, "VmPoweredOffEvent", "VmStopped", 1) + "\npass\t" + onEvent + "\n", "", ""},
		{"invalid input line", []string{"-wasm", drop}, "not json\n" + onEvent + "\n", 3,
			"error\tline 1: input is not a CloudEvent", "", ""},
		{"module error", []string{"-wasm", subjectMap, "-filter-config", "VmPoweredOffEvent=bad\"subject"}, offEvent + "\n", 3,
			"error\tline 1: output: replacement event is not a valid CloudEvent", "", ""},
		{"garbage module", []string{"-wasm", garbage}, "", 1, "", "module refused: " + garbage + ": not a WebAssembly module", ""},
		{"module without exports", []string{"-wasm", empty}, "", 1, "", `missing export "memory"`, ""},
		{"bad filter config", []string{"-wasm", subjectMap, "-filter-config", "nonsense"}, "", 1, "", "evr_init returned 1, refusing to load: config must be From=To pairs", ""},
		{"missing module", []string{"-wasm", filepath.Join(dir, "nope.wasm")}, "", 1, "", "no such file", ""},
		{"missing events file", []string{"-wasm", drop, filepath.Join(dir, "nope.jsonl")}, "", 1, "", "no such file", ""},
		{"no -wasm", nil, "", 2, "", "Usage: vmware-event-router filter", ""},
		{"bad memory limit", []string{"-wasm", drop, "-memory-limit", "lots"}, "", 2, "", "-memory-limit", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := filterCommand(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q; stderr %q", code, tc.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.out) {
				t.Fatalf("stdout %q, want it to contain %q", stdout.String(), tc.out)
			}
			if !strings.Contains(stderr.String(), tc.err) {
				t.Fatalf("stderr %q, want it to contain %q", stderr.String(), tc.err)
			}
		})
	}
}

// TestWasmFilterEndToEnd runs the daemon against the vCenter simulator with
// the WAT example written from the README, drop-powered-off.wasm: a
// VmPoweredOffEvent never reaches the processor, the VM's other events do.
func TestWasmFilterEndToEnd(t *testing.T) {
	sim := vcsimtest.Start(t)
	filterEntry := map[string]any{"type": "filter", "provider": "wasm",
		"address": examplePath(t, "drop-powered-off", "drop-powered-off.wasm"),
		"options": map[string]any{"timeout": "100ms", "on_error": "pass"}}
	d := startCore(t, sim.Config(), filterEntry, stdoutEntry)
	d.waitReady(t)

	ctx := context.Background()
	finder := find.NewFinder(sim.Client())
	vms, err := finder.VirtualMachineList(ctx, "*")
	if err != nil || len(vms) == 0 {
		t.Fatalf("simulator VMs: %v", err)
	}
	hosts, err := finder.HostSystemList(ctx, "*")
	if err != nil || len(hosts) == 0 {
		t.Fatalf("simulator hosts: %v", err)
	}
	vm := &types.VmEventArgument{EntityEventArgument: types.EntityEventArgument{Name: vms[0].Name()}, Vm: vms[0].Reference()}
	host := &types.HostEventArgument{EntityEventArgument: types.EntityEventArgument{Name: hosts[0].Name()}, Host: hosts[0].Reference()}
	for _, ev := range []types.BaseEvent{
		&types.VmPoweredOffEvent{VmEvent: types.VmEvent{Event: types.Event{Vm: vm, Host: host}}},
		&types.VmPoweredOnEvent{VmEvent: types.VmEvent{Event: types.Event{Vm: vm, Host: host}}},
	} {
		sim.Post(ev)
	}

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stdout.String(), `"subject":"VmPoweredOnEvent"`) {
		if time.Now().After(deadline) {
			t.Fatalf("VmPoweredOnEvent not delivered; log:\n%s", tail(d.stderr.String(), 4000))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The same VM's events are handled in order: the earlier
	// VmPoweredOffEvent has been decided by now.
	if strings.Contains(d.stdout.String(), `"subject":"VmPoweredOffEvent"`) {
		t.Fatalf("the filter let a VmPoweredOffEvent through:\n%s", d.stdout.String())
	}
	_, body := httpGet(t, d.metrics+"/metrics")
	if !strings.Contains(body, `eventrouter_filter_verdicts_total{filter="drop-powered-off.wasm",verdict="drop"} 1`) {
		t.Fatalf("/metrics has no drop verdict for the filter:\n%s", grepLines(body, "eventrouter_filter"))
	}
	_, stats := httpGet(t, d.metrics+"/stats")
	if !strings.Contains(stats, `"filter:drop-powered-off.wasm"`) {
		t.Fatalf("/stats has no filter:drop-powered-off.wasm object")
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
