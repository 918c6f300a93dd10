package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuick runs the whole benchmark in its few-second mode against a
// freshly built router, through each processor. It checks that every event
// arrives once and in order per VM and that the report is complete; it
// asserts no timing (the figures are the benchmark's output, not a test).
func TestQuick(t *testing.T) {
	t.Parallel() // the runs mostly wait on their phases: run them side by side
	bin := buildRouter(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"stdout", nil},
		{"openfaas", []string{"-processor", "openfaas", "-fn-delay", "10ms"}},
		{"cloudevents", []string{"-processor", "cloudevents"}},
		// A read+replace filter on every event: they are still delivered.
		{"wasm filter", []string{"-filter", "../../examples/filters/subject-map/subject-map.wasm", "-filter-config", "VmPoweredOnEvent=VmPoweredOnEvent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			csvPath := filepath.Join(t.TempDir(), "deliveries.csv")
			args := append([]string{"-quick", "-router", bin, "-csv", csvPath}, tc.args...)
			if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("evr-bench %s: exit code %d\nstderr:\n%s\nstdout:\n%s", strings.Join(args, " "), code, &stderr, &stdout)
			}
			for _, want := range []string{
				"spawn to first event delivered", ": p99 |", "first event after", "burst of 100: drain",
				"router CPU per 1,000 events, burst", "VmHWM", "| order per VM | kept over", "| events delivered twice | 0 |",
				"(exit code 0)", "Method:",
			} {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, &stdout)
				}
			}
			data, err := os.ReadFile(csvPath)
			if err != nil {
				t.Fatal(err)
			}
			// The header, then at least the steady, idle and burst events.
			if lines := strings.Count(string(data), "\n"); lines < 1+20+1+100 {
				t.Errorf("-csv wrote %d lines, want at least 122:\n%s", lines, data)
			}
		})
	}
}

// buildRouter builds the router binary for the test.
func buildRouter(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vmware-event-router")
	build := exec.Command("go", "build", "-o", bin, "../vmware-event-router")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the router: %v\n%s", err, out)
	}
	return bin
}

// TestQuickStreams runs the several-streams mode with 1 and 3 streams: a
// run fails unless every stream's events all arrive, once and in order per
// VM, and the router exits 0.
func TestQuickStreams(t *testing.T) {
	t.Parallel()
	bin := buildRouter(t)
	var stdout, stderr bytes.Buffer
	args := []string{"-quick", "-router", bin, "-streams", "1,3"}
	if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("evr-bench %s: exit code %d\nstderr:\n%s\nstdout:\n%s", strings.Join(args, " "), code, &stderr, &stdout)
	}
	for _, want := range []string{
		"| measure | 1 stream | 3 streams |", "latency p99 of the slowest stream |", "router CPU per stream |",
		"delivered throughput per stream |", "(VmRSS) |", "Each stream beyond 1 (from the medians at 1 and 3 streams)", "Method:",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, &stdout)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"defaults", nil, ""},
		{"quick", []string{"-quick"}, ""},
		{"burst too large", []string{"-burst", "901"}, "-burst: must be 1 to 900"},
		{"zero rate", []string{"-rate", "0"}, "-rate: must be above 0"},
		{"unknown processor", []string{"-processor", "aws"}, `-processor: must be "stdout", "openfaas" or "cloudevents"`},
		{"negative delay", []string{"-fn-delay", "-1s"}, "-fn-delay: must not be negative"},
		{"stray argument", []string{"extra"}, `unexpected argument "extra"`},
		{"streams", []string{"-streams", "1,4,16", "-repeat", "3"}, ""},
		{"no streams", []string{"-streams", "0"}, "must be a comma-separated list of counts from 1 to 32"},
		{"bad streams", []string{"-streams", "1,x"}, `got "x"`},
		{"repeat without streams", []string{"-repeat", "3"}, "-repeat: only with -streams"},
		{"filter with streams", []string{"-streams", "4", "-filter", "f.wasm"}, "-filter: only without -streams"},
		{"streams through openfaas", []string{"-streams", "4", "-processor", "openfaas"}, "-streams: measures the stdout processor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, &bytes.Buffer{})
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}
