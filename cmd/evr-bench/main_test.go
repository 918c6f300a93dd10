package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the bench's reference process, as the
// bench binary is (the bench runs os.Executable again).
func TestMain(m *testing.M) {
	if addr := os.Getenv(referenceEnv); addr != "" {
		os.Exit(runReferenceChild(addr))
	}
	os.Exit(m.Run())
}

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
				"router CPU per 1,000 events, burst", "VmHWM", "reference process (the floor", "the router costs", "| order per VM | kept over", "| events delivered twice | 0 |",
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
		{"filter cost", []string{"-filter", "f.wasm", "-repeat", "8"}, ""},
		{"filter cost with csv", []string{"-filter", "f.wasm", "-repeat", "2", "-csv", "x.csv"}, "-csv: only for a single run"},
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

// TestFilterCost runs -filter with -repeat in quick mode: pairs of runs,
// without then with the filter, summarised against issue 16's target.
func TestFilterCost(t *testing.T) {
	t.Parallel()
	bin := buildRouter(t)
	var stdout, stderr bytes.Buffer
	args := []string{"-quick", "-router", bin, "-repeat", "2",
		"-filter", "../../examples/filters/subject-map/subject-map.wasm", "-filter-config", "VmPoweredOnEvent=VmPoweredOnEvent"}
	if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("evr-bench %s: exit code %d\nstderr:\n%s\nstdout:\n%s", strings.Join(args, " "), code, &stderr, &stdout)
	}
	for _, want := range []string{"what the Wasm filter subject-map.wasm costs", "burst of 100 (median of 2)", "≤ 1.25×:", "| burst, each run"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, &stdout)
		}
	}
	// Two runs each side: two figures per side in the per-run row.
	row := stdout.String()[strings.Index(stdout.String(), "| burst, each run"):]
	row = row[:strings.IndexByte(row, '\n')]
	if cells := strings.Split(row, "|"); len(cells) < 4 || len(strings.Fields(cells[2])) != 2 || len(strings.Fields(cells[3])) != 2 {
		t.Errorf("per-run row %q: want two figures without and two with the filter", row)
	}
}

func TestFilterCostPhases(t *testing.T) {
	o, err := parseFlags([]string{"-filter", "f.wasm", "-repeat", "3"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != time.Second || o.idle != 0 {
		t.Errorf("duration %v idle %v, want 1s and 0 for a filter-cost run", o.duration, o.idle)
	}
	o, err = parseFlags([]string{"-filter", "f.wasm", "-repeat", "3", "-duration", "5s", "-idle", "2s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 5*time.Second || o.idle != 2*time.Second {
		t.Errorf("duration %v idle %v, want the flags' 5s and 2s", o.duration, o.idle)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
