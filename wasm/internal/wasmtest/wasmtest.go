// Package wasmtest builds WebAssembly test modules from source with the
// toolchains the test run installs (wat2wasm from Debian's wabt, clang with
// wasi-libc, Go's wasip1 port). A missing tool fails the test with the
// package to install; it never skips.
package wasmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tool names the Debian package that provides each external tool.
var toolPackage = map[string]string{
	"wat2wasm": "wabt",
	"clang":    "clang lld wasi-libc libclang-rt-dev-wasm32",
}

func need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package(s) %s (make test does)", tool, toolPackage[tool])
	}
	return p
}

func run(t testing.TB, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
	}
}

// WAT assembles WebAssembly text src with wat2wasm.
func WAT(t testing.TB, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "m.wat")
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return WATFile(t, in)
}

// WATFile assembles the WebAssembly text file path with wat2wasm.
func WATFile(t testing.TB, path string) []byte {
	t.Helper()
	tool := need(t, "wat2wasm")
	out := filepath.Join(t.TempDir(), "m.wasm")
	run(t, "", nil, tool, path, "-o", out)
	return read(t, out)
}

// CFile compiles the C file path into a WASI reactor with clang, the
// command documented for C filters.
func CFile(t testing.TB, path string) []byte {
	t.Helper()
	tool := need(t, "clang")
	out := filepath.Join(t.TempDir(), "m.wasm")
	run(t, "", nil, tool, "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-Wl,--strip-debug", "-o", out, path)
	return read(t, out)
}

// GoPackage builds the Go main package in dir (inside this module) for
// GOOS=wasip1 GOARCH=wasm with -buildmode=c-shared.
func GoPackage(t testing.TB, dir string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "m.wasm")
	// go test puts its own GOROOT/bin first in the test's PATH, so this
	// finds the toolchain running the tests.
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found in PATH: %v", err)
	}
	run(t, dir, []string{"GOOS=wasip1", "GOARCH=wasm"}, goTool, "build", "-buildmode=c-shared", "-o", out, ".")
	return read(t, out)
}

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RepoRoot returns the directory holding this module's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Event returns a CloudEvent in the router's shape with the given subject
// and VM name, as one line of JSON.
func Event(subject, vm string) []byte {
	return fmt.Appendf(nil, `{"id":"08179137-b8e0-4973-b05f-8f212bf5003b","source":"https://10.0.0.1:443/sdk","specversion":"1.0","type":"com.vmware.event.router/event","subject":%q,"time":"2020-02-11T21:29:54.9052539Z","data":{"Key":9902,"ChainId":9895,"CreatedTime":"2020-02-11T21:28:23.677595Z","UserName":"VSPHERE.LOCAL\\Administrator","Datacenter":{"Name":"testDC","Datacenter":{"Type":"Datacenter","Value":"datacenter-2"}},"ComputeResource":{"Name":"cls","ComputeResource":{"Type":"ClusterComputeResource","Value":"domain-c7"}},"Host":{"Name":"10.185.22.74","Host":{"Type":"HostSystem","Value":"host-21"}},"Vm":{"Name":%q,"Vm":{"Type":"VirtualMachine","Value":"vm-56"}},"Ds":null,"Net":null,"Dvs":null,"FullFormattedMessage":"%s on  10.0.0.1 in testDC is powered off","ChangeTag":"","Template":false},"datacontenttype":"application/json"}`, subject, vm, vm)
}
