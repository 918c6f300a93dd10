package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		limit int64
		ok    bool
	}{
		{"v2", map[string]string{"memory.max": "268435456\n"}, 256 << 20, true},
		{"v2 unlimited", map[string]string{"memory.max": "max\n"}, 0, false},
		{"v1 in the root", map[string]string{"memory.limit_in_bytes": "536870912\n"}, 512 << 20, true},
		{"v1 controller directory", map[string]string{"memory/memory.limit_in_bytes": "134217728\n"}, 128 << 20, true},
		{"v1 unlimited", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"garbage", map[string]string{"memory.max": "lots\n"}, 0, false},
		{"no cgroup", nil, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, data := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			limit, ok := cgroupMemoryLimit(root)
			if limit != tc.limit || ok != tc.ok {
				t.Fatalf("cgroupMemoryLimit = %d, %v; want %d, %v", limit, ok, tc.limit, tc.ok)
			}
		})
	}
}

// TestSetMemoryLimit: the Go memory limit is 90% of the cgroup's, logged
// at debug level, and GOMEMLIMIT wins.
func TestSetMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("268435456\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOMEMLIMIT", "")
	var log testutil.SyncBuffer
	setMemoryLimit(newLogger(&log, true), root)
	if got, want := debug.SetMemoryLimit(-1), int64(268435456/10*9); got != want {
		t.Fatalf("memory limit = %d, want %d", got, want)
	}
	if !strings.Contains(log.String(), `msg="go memory limit set from the cgroup" limit_bytes=241591905`) {
		t.Fatalf("log %q lacks the limit", log.String())
	}

	debug.SetMemoryLimit(before)
	t.Setenv("GOMEMLIMIT", "1GiB")
	setMemoryLimit(newLogger(&log, true), root)
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("with GOMEMLIMIT set, memory limit = %d, want it unchanged (%d)", got, before)
	}
}
