package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

// The reference process is the least any Go process must do for an event
// at a trickle, run beside the router during the steady phase: woken by an
// answer on a TLS connection, it reads it (2 KB, about a WaitForUpdatesEx
// answer with one event), writes a line to stdout and sends the next
// request. Its CPU per message is the machine's floor for the router's CPU
// per event: on a virtual machine where waking a process is expensive, that
// floor moves from run to run, and a figure for the router means little
// without it. It is this binary run again with referenceEnv set.
const referenceEnv = "EVR_BENCH_REFERENCE"

// referenceSize is the size of one message to the reference process.
const referenceSize = 2048

// runReferenceChild is the reference process: it follows the bench at addr
// until the connection ends.
func runReferenceChild(addr string) int {
	// The bench's certificate is made up for the run: the reference
	// process measures TLS's cost, not its trust.
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // see above
	if err != nil {
		fmt.Fprintf(os.Stderr, "evr-bench reference: %v\n", err)
		return 1
	}
	defer func() { _ = c.Close() }()
	br := bufio.NewReaderSize(c, 32<<10)
	out := bufio.NewWriter(os.Stdout)
	req := []byte("next\n")
	for {
		msg, err := br.ReadSlice('\n')
		if err != nil {
			return 0 // the bench closed the connection: the run is over
		}
		_, _ = fmt.Fprintf(out, "message of %d bytes\n", len(msg)) // a write error shows at Flush
		if out.Flush() != nil {
			return 1
		}
		if _, err := c.Write(req); err != nil {
			return 0
		}
	}
}

// reference is the bench's side of the reference process.
type reference struct {
	cmd  *exec.Cmd
	conn net.Conn
	msg  []byte
	done chan struct{} // the child's stdout has ended
}

// startReference starts the reference process and waits for its connection.
func startReference(ctx context.Context) (_ *reference, err error) {
	certPEM, keyPEM, err := testutil.SelfSigned()
	if err != nil {
		return nil, fmt.Errorf("reference process: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("reference process: %w", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return nil, fmt.Errorf("reference process: %w", err)
	}
	defer func() { _ = ln.Close() }()
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("reference process: %w", err)
	}
	r := &reference{msg: []byte(strings.Repeat("x", referenceSize-1) + "\n"), done: make(chan struct{})}
	r.cmd = exec.Command(self)
	r.cmd.Env = append(os.Environ(), referenceEnv+"="+ln.Addr().String())
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("reference process: %w", err)
	}
	r.cmd.Stderr = os.Stderr
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("reference process: %w", err)
	}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	// The bench reads the child's lines as it reads the router's.
	go func() {
		defer close(r.done)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	type accepted struct {
		c   net.Conn
		err error
	}
	got := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			err = c.(*tls.Conn).HandshakeContext(ctx)
		}
		got <- accepted{c, err}
	}()
	select {
	case a := <-got:
		if a.err != nil {
			return nil, fmt.Errorf("reference process: %w", a.err)
		}
		r.conn = a.c
	case <-time.After(10 * time.Second):
		return nil, errors.New("reference process: no connection within 10 s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Its requests are read and dropped: the bench sends at its own rate.
	go func() { _, _ = io.Copy(io.Discard, r.conn) }()
	return r, nil
}

// send wakes the reference process with one message.
func (r *reference) send() error {
	_, err := r.conn.Write(r.msg)
	return err
}

func (r *reference) stat() (procStat, error) { return readProc(r.cmd.Process.Pid) }

// close ends the reference process.
func (r *reference) close() {
	if r.conn != nil {
		_ = r.conn.Close()
	}
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
	}
	_ = r.cmd.Wait()
}
