package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// statusKB reads a field in kB (VmRSS, RssFile) of /proc/PID/status;
// pid 0 is this process.
func statusKB(tb testing.TB, pid int, field string) float64 {
	tb.Helper()
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb
		}
	}
	tb.Fatalf("no %s in %s", field, path)
	return 0
}

// BenchmarkOutageMemory measures the router process's memory while its
// OpenFaaS gateway is down and events pile up in the destination queue:
// the figure behind the README's memory bound. It runs the real binary,
// with the simulator and the gateway in the benchmark process.
//
//	go test -run '^$' -bench BenchmarkOutageMemory -benchtime 1x ./cmd/vmware-event-router/
func BenchmarkOutageMemory(b *testing.B) {
	for b.Loop() {
		sim := vcsimtest.Start(b)
		gw, err := faastest.New(faastest.Options{})
		if err != nil {
			b.Fatal(err)
		}
		gw.Deploy("sink", "", map[string]string{"topic": "com.example.mem"})
		addr := freeAddr(b)
		config := writeConfig(b, sim.Config(), openfaasEntry(gw, nil), metricsEntry(addr))
		cmd := startProcess(b, config, filepath.Join(b.TempDir(), "out.jsonl"))
		waitReady(b, "http://"+addr)
		before := statusKB(b, cmd.Process.Pid, "VmRSS")
		anonBefore := statusKB(b, cmd.Process.Pid, "RssAnon")

		gw.Stop()
		const n = 900 // the simulator keeps about 1,000 events per collector
		sim.PostEx("mem", 0, n)
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, body := httpGet(b, "http://"+addr+"/metrics")
			if strings.Contains(body, fmt.Sprintf(`eventrouter_queue_depth{destination="sink",processor="openfaas"} %d`, n)) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the queue never held the whole burst")
			}
			time.Sleep(20 * time.Millisecond)
		}
		during := statusKB(b, cmd.Process.Pid, "VmRSS")
		anonDuring := statusKB(b, cmd.Process.Pid, "RssAnon")
		b.ReportMetric(before/1024, "rss-MB-idle")
		b.ReportMetric(during/1024, "rss-MB-900-queued")
		// VmRSS also counts code pages the burst pages back in; RssAnon
		// is the router's own memory (heap, with the collector's headroom,
		// and stacks). BenchmarkQueuedEventMemory in gateway/ measures the
		// live heap per queued event.
		b.ReportMetric((during-before)/n, "KB-per-queued-event")
		b.ReportMetric((anonDuring-anonBefore)/n, "anon-KB-per-queued-event")
		gw.Close()
	}
}
