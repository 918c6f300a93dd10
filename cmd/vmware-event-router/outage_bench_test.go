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

// rssKB reads a process's resident set size from /proc.
func rssKB(b *testing.B, pid int) float64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatal("no VmRSS")
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
		before := rssKB(b, cmd.Process.Pid)

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
		during := rssKB(b, cmd.Process.Pid)
		b.ReportMetric(before/1024, "rss-MB-idle")
		b.ReportMetric(during/1024, "rss-MB-900-queued")
		b.ReportMetric((during-before)/n, "KB-per-queued-event")
		gw.Close()
	}
}
