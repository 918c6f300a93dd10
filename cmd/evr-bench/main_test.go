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
	bin := filepath.Join(t.TempDir(), "vmware-event-router")
	build := exec.Command("go", "build", "-o", bin, "../vmware-event-router")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the router: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"stdout", nil},
		{"openfaas", []string{"-processor", "openfaas", "-fn-delay", "10ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
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
		{"unknown processor", []string{"-processor", "aws"}, `-processor: must be "stdout" or "openfaas"`},
		{"negative delay", []string{"-fn-delay", "-1s"}, "-fn-delay: must not be negative"},
		{"stray argument", []string{"extra"}, `unexpected argument "extra"`},
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
