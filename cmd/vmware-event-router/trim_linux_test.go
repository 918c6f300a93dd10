package main

import (
	"os"
	"testing"
)

// TestDropStartupPages: the executable's read-only mappings are advised
// away, the pages this process holds fall, and the code still runs (what
// it needs faults back in).
func TestDropStartupPages(t *testing.T) {
	if traced() {
		t.Fatal("the test process is traced: run it without a debugger or strace")
	}
	before := statusKB(t, 0, "RssFile")
	advised := dropStartupPages()
	after := statusKB(t, 0, "RssFile")
	exe, _ := os.Executable()
	info, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	if advised <= 0 || advised > info.Size()+1<<20 {
		t.Fatalf("advised %d bytes of mappings of %s (%d bytes): want the read-only segments", advised, exe, info.Size())
	}
	if after >= before {
		t.Fatalf("RssFile %.0f kB after dropping the start-up pages, %.0f kB before: want fewer", after, before)
	}
	t.Logf("RssFile %.0f kB -> %.0f kB (%d MB of mappings advised)", before, after, advised>>20)
}
