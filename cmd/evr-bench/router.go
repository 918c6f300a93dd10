package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// routerProc is the router under test: the binary run as a child process
// with a config file and its log in dir, its stdout read by a recorder.
type routerProc struct {
	path    string // the binary
	dir     string // config file and router log
	metrics string // the router's metrics base URL
	cmd     *exec.Cmd
	exited  chan struct{}
}

// writeConfig writes entries plus a metrics entry on a free 127.0.0.1 port
// as the router's config file, in a new directory. The port is fixed so
// /readyz can be polled from the moment the router starts.
func (p *routerProc) writeConfig(entries ...any) error {
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "evr-bench-")
		if err != nil {
			return err
		}
		p.dir = dir
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	p.metrics = "http://127.0.0.1:" + port
	entries = append(entries, map[string]any{"type": "metrics", "provider": "internal", "address": "127.0.0.1:" + port, "auth": map[string]string{"method": "none"}})
	cfg, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p.dir, "config.json"), cfg, 0o600)
}

// spawn starts the router; rec reads its stdout (nil: discarded).
func (p *routerProc) spawn(rec *recorder) error {
	logFile, err := os.Create(filepath.Join(p.dir, "router.log"))
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	// A pipe of our own rather than StdoutPipe: Wait must not close it
	// while the reader may still be reading.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	p.cmd = exec.Command(p.path, "-config", filepath.Join(p.dir, "config.json"))
	p.cmd.Stdout, p.cmd.Stderr = pw, logFile
	if err := p.cmd.Start(); err != nil {
		_, _ = pr.Close(), pw.Close()
		return fmt.Errorf("starting the router: %w", err)
	}
	_ = pw.Close() // the child holds the write end now
	p.exited = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	if rec == nil {
		go func() { _, _ = io.Copy(io.Discard, pr); _ = pr.Close() }()
	} else {
		go func() { rec.readLines(pr); _ = pr.Close() }()
	}
	return nil
}

// pollReady polls /readyz every 5 ms until it answers 200.
func (p *routerProc) pollReady(ctx context.Context, deadline <-chan time.Time) error {
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.metrics+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-p.exited:
			return errors.New("the router exited during start-up")
		case <-deadline:
			return errors.New("/readyz: not ready within 30 s of start")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stat reads the router's CPU time and memory.
func (p *routerProc) stat() (procStat, error) { return readProc(p.cmd.Process.Pid) }

// stop sends SIGTERM and returns how long the router took to exit and its
// exit code.
func (p *routerProc) stop() (time.Duration, int, error) {
	t := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, 0, fmt.Errorf("stopping the router: %w", err)
	}
	select {
	case <-p.exited:
		return time.Since(t), p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(20 * time.Second):
		return 0, 0, errors.New("the router did not exit within 20 s of SIGTERM")
	}
}

// close kills the router if it still runs and removes its directory.
func (p *routerProc) close() {
	if p.cmd != nil && p.cmd.Process != nil {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
}

// logTail is the end of the router's log, to explain a failed run.
func (p *routerProc) logTail() string {
	if p.dir == "" {
		return ""
	}
	data, err := os.ReadFile(filepath.Join(p.dir, "router.log"))
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.SplitAfter(strings.TrimRight(string(data), "\n"), "\n")
	return "router log (last lines):\n" + strings.Join(lines[max(0, len(lines)-20):], "") + "\n"
}
