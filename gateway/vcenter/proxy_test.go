package vcenter

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// proxy forwards TCP connections to a target. freeze makes every open
// connection silent (nothing is forwarded any more, nothing is closed), the
// way a connection through a dead firewall or a hung vCenter behaves; new
// connections are forwarded normally. cut closes every connection and
// refuses new ones until retarget names where to forward again, as a
// vCenter going down and another (or the same, restored) coming up.
type proxy struct {
	ln net.Listener

	mu     sync.Mutex
	target string // "" refuses connections
	conns  []*proxyConn
	wg     sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	silent         atomic.Bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		if target == "" {
			_ = c.Close()
			continue
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pc := &proxyConn{client: c, server: s}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pc, c, s)
		go p.pipe(pc, s, c)
	}
}

// pipe copies from src to dst until either closes; once the connection is
// silent it reads and drops.
func (p *proxy) pipe(pc *proxyConn, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pc.silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				break
			}
			break
		}
	}
	if !pc.silent.Load() {
		_ = dst.Close()
	}
}

func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		pc.silent.Store(true)
	}
}

// cut closes every connection and refuses new ones.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = ""
	for _, pc := range p.conns {
		_ = pc.client.Close()
		_ = pc.server.Close()
	}
	p.conns = nil
}

// retarget forwards new connections to target.
func (p *proxy) retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, pc := range p.conns {
		_ = pc.client.Close()
		_ = pc.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
