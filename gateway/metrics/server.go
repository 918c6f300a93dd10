package metrics

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServerOptions configures the metrics server.
type ServerOptions struct {
	Address     string // HOST:PORT
	Username    string // basic auth for /stats and /metrics when set
	Password    string
	TLSCertFile string
	TLSKeyFile  string
	// Ready returns nil when the router is ready, else why not (/readyz).
	Ready func() error
	// Degraded, when set, lists the parts that work but not fully, one
	// "stream NAME: reason" or "processor NAME: reason" each. /readyz stays
	// 200 and prints each as a "degraded: " line after "ok".
	Degraded func() []string
	Log      *slog.Logger
}

// Server serves /stats, /metrics, /livez and /readyz.
type Server struct {
	m    *Metrics
	o    ServerOptions
	ln   net.Listener
	http *http.Server
}

// NewServer listens on o.Address; serving starts with Serve. Listening here
// makes a taken port a start-up error rather than a log line later.
func NewServer(m *Metrics, o ServerOptions) (*Server, error) {
	ln, err := net.Listen("tcp", o.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics server: %w", err)
	}
	s := &Server{m: m, o: o, ln: ln}
	mux := http.NewServeMux()
	mux.Handle("GET /stats", s.auth(http.HandlerFunc(s.stats)))
	mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr returns the address the server listens on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	var err error
	if s.o.TLSCertFile != "" {
		err = s.http.ServeTLS(s.ln, s.o.TLSCertFile, s.o.TLSKeyFile)
	} else {
		err = s.http.Serve(s.ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if err := s.m.Stats.WriteJSON(w); err != nil {
		s.o.Log.Debug("writing /stats", "err", err)
	}
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.o.Ready != nil {
		if err := s.o.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	_, _ = fmt.Fprintln(w, "ok")
	if s.o.Degraded != nil {
		for _, line := range s.o.Degraded() {
			_, _ = fmt.Fprintf(w, "degraded: %s\n", line)
		}
	}
}

// auth wraps h with basic auth when a username is configured. Credentials
// are compared in constant time, over hashes so that their length leaks
// nothing either.
func (s *Server) auth(h http.Handler) http.Handler {
	if s.o.Username == "" {
		return h
	}
	wantUser := sha256.Sum256([]byte(s.o.Username))
	wantPass := sha256.Sum256([]byte(s.o.Password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		gotUser := sha256.Sum256([]byte(user))
		gotPass := sha256.Sum256([]byte(pass))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || userOK&passOK != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="vmware-event-router", charset="UTF-8"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
