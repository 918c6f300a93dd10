package vcenter

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi/event"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// helperEnv makes the test binary run as the external simulator of
// BenchmarkFollow, so the benchmark's CPU figures are the stream's alone.
const helperEnv = "EVR_VCENTER_SIM_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(simHelper(os.Stdin, os.Stdout))
	}
	code := m.Run()
	if code == 0 {
		code = checkFastMismatches()
	}
	os.Exit(code)
}

// simHelper serves a simulator on 127.0.0.1, prints its URL and the path of
// its certificate, then posts as many events as each line of in asks for.
func simHelper(in io.Reader, out io.Writer) int {
	model, server, err := vcsimtest.Listen("127.0.0.1:0", url.UserPassword(vcsimtest.User, vcsimtest.Password))
	if err != nil {
		_, _ = fmt.Fprintln(out, "error", err)
		return 1
	}
	defer model.Remove()
	defer server.Close()
	ca := filepath.Join(os.TempDir(), fmt.Sprintf("evr-bench-sim-%d.pem", os.Getpid()))
	if err := os.WriteFile(ca, vcsimtest.CertPEM(server), 0o600); err != nil {
		_, _ = fmt.Fprintln(out, "error", err)
		return 1
	}
	defer func() { _ = os.Remove(ca) }()
	u := *server.URL
	u.User = nil
	_, _ = fmt.Fprintln(out, u.String(), ca)

	c, err := vim25.NewClient(context.Background(), model.Service)
	if err != nil {
		return 1
	}
	m := event.NewManager(c)
	root := c.ServiceContent.RootFolder
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		// "N" posts N events; "N sync" also answers "done" once they are
		// posted.
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		for range n {
			_ = m.PostEvent(context.Background(), &types.EventEx{EventTypeId: "com.example.bench", ObjectType: root.Type, ObjectId: root.Value})
		}
		if len(f) > 1 && f[1] == "sync" {
			_, _ = fmt.Fprintln(out, "done")
		}
	}
	return 0
}

// simProcess is the simulator helper of the benchmarks, in its own
// process.
type simProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	url   string
	ca    string
}

func startSimProcess(b *testing.B) *simProcess {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &simProcess{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := p.out.ReadString('\n')
	fields := strings.Fields(line)
	if err != nil || len(fields) != 2 {
		b.Fatalf("the simulator helper did not start: %q %v", line, err)
	}
	p.url, p.ca = fields[0], fields[1]
	return p
}

// postSync has the helper post n events and waits until it has.
func (p *simProcess) postSync(b *testing.B, n int) {
	b.Helper()
	if _, err := fmt.Fprintln(p.stdin, n, "sync"); err != nil {
		b.Fatal(err)
	}
	if line, err := p.out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "done" {
		b.Fatalf("the simulator helper answered %q, %v", line, err)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFollow measures the stream following a simulator in another
// process: "one" posts an event and waits for it (every event its own
// update: the steady state at a low rate; ns/op is the latency from posting
// to delivery, including the simulator's 0-20 ms tick), "burst900" posts
// 900 at once and waits for all. cpu-us/event is this process's CPU (the
// stream, the SOAP client, the conversion) per event.
func BenchmarkFollow(b *testing.B) {
	noVerifyFast(b)
	p := startSimProcess(b)
	stdin := p.stdin
	s, err := New(config.VCenter{Address: p.url, Username: vcsimtest.User, Password: vcsimtest.Password, CAFile: p.ca}, quietLogger(), metrics.New())
	if err != nil {
		b.Fatal(err)
	}
	s.tun.direct = os.Getenv("EVR_BENCH_NETHTTP") == ""
	h := &recorder{notify: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, h) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
		_ = s.Close() // logs out, so the helper's server closes at once
	}()
	deadline := time.Now().Add(20 * time.Second)
	for s.Ready() != nil {
		if time.Now().After(deadline) {
			b.Fatalf("not ready: %v", s.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}

	for _, bm := range []struct {
		name string
		n    int
	}{{"one", 1}, {"burst900", 900}} {
		b.Run(bm.name, func(b *testing.B) {
			events := 0
			cpu0 := cpuTime()
			for b.Loop() {
				want := h.count() + bm.n
				if _, err := fmt.Fprintln(stdin, bm.n); err != nil {
					b.Fatal(err)
				}
				timeout := time.After(30 * time.Second)
				for h.count() < want {
					select {
					case <-h.notify:
					case <-timeout:
						b.Fatalf("%d of %d events delivered", h.count()-want+bm.n, bm.n)
					}
				}
				events += bm.n
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(events), "cpu-us/event")
		})
	}
}

// BenchmarkCatchUp measures a catch-up over 900 events a simulator in
// another process holds: each op is one CatchUp from the position before
// them (log in, create a collector, read in pages of 1000, hand on, destroy
// the collector, log out); the events are posted with the timer stopped.
// events/s is the catch-up's rate; cpu-us/event is this process's CPU per
// event handed on, to compare with BenchmarkFollow's.
func BenchmarkCatchUp(b *testing.B) {
	noVerifyFast(b)
	p := startSimProcess(b)
	s, err := New(config.VCenter{Address: p.url, Username: vcsimtest.User, Password: vcsimtest.Password, CAFile: p.ca}, quietLogger(), metrics.New())
	if err != nil {
		b.Fatal(err)
	}
	s.tun.direct = os.Getenv("EVR_BENCH_NETHTTP") == ""
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	var pos gateway.Position
	upTo := func(last gateway.Position) bool { pos = last; return true }
	// The position of the newest event held.
	if err := s.CatchUp(ctx, gateway.Position{Time: time.Now().Add(-time.Hour), Key: math.MinInt32}, &recorder{}, upTo); err != nil {
		b.Fatal(err)
	}

	events := 0
	var cpu, wall time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		p.postSync(b, 900)
		h := &recorder{}
		b.StartTimer()
		cpu0, t0 := cpuTime(), time.Now()
		if err := s.CatchUp(ctx, pos, h, upTo); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - cpu0
		wall += time.Since(t0)
		if n := h.count(); n < 900 {
			b.Fatalf("%d events handed on, want at least 900", n)
		}
		events += h.count()
	}
	b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(events), "cpu-us/event")
}
