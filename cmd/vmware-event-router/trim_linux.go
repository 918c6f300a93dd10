package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// dropStartupPages unmaps the pages of the executable's read-only
// segments (code, and read-only data such as type descriptors) from the
// process, so that only what runs from now on is paged in again. Start-up
// touches most of the binary once (some 200 package initialisers spread
// over it, each page fault mapping its 64 KB neighbourhood) and never runs
// that code again; those pages stay in the page cache, shared and
// reclaimable, but no longer count as this process's memory. Writable
// segments are left alone: MADV_DONTNEED would discard their contents. So
// is a traced process: a debugger's breakpoints are written into private
// copies of code pages, which MADV_DONTNEED would discard too.
// It returns the bytes of mappings advised.
func dropStartupPages() int64 {
	exe, err := os.Executable()
	if err != nil || traced() {
		return 0
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	var n int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-00ea1000 r-xp 00000000 08:01 1234 /path/to/binary
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED)
		if errno == 0 {
			n += int64(end - start)
		}
	}
	return n
}

// traced reports whether a debugger (or strace) is attached.
func traced() bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true // unsure: leave the pages alone
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			return strings.TrimSpace(v) != "0"
		}
	}
	return true
}
