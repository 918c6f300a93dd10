package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway/pattern"
)

// The kinds of this package: the filter, metrics and state entries, which
// are parts of the router rather than providers.
var (
	wasmSpec = &Spec{
		Type: TypeFilter, Provider: ProviderWasm, Doc: "a WebAssembly filter every event goes through",
		Address: AddressRule{Hint: "a .wasm or .wasm.gz file, or a directory of them", Check: wasmAddress},
		Auth:    []AuthMethod{NoAuth},
		Options: []Option{
			Duration("timeout", "100ms", "how long one call of the filter may take", func(s *WasmFilter) *time.Duration { return &s.Timeout }),
			OneOf("on_error", string(OnErrorPass), "what a failing filter does to the event", func(s *WasmFilter) *OnError { return &s.OnError },
				OnErrorPass, OnErrorDrop, OnErrorDeadLetter),
			String("config", "", "handed to the module", func(s *WasmFilter) *string { return &s.Config }),
			Size("memory_limit", "16MiB", "the module's memory limit", func(s *WasmFilter) *int64 { return &s.MemoryLimit }),
			Int("pool_size", "2", "instances of the module run at once", 1, math.MaxInt, func(s *WasmFilter) *int { return &s.PoolSize }),
		},
		New: func(e Entry) any { return &WasmFilter{Index: e.Index, Name: e.Name, Address: e.Address} },
		Check: func(st any, c *Checker) {
			s := st.(*WasmFilter)
			if s.MemoryLimit > 0 && s.MemoryLimit < 64<<10 {
				c.Problem("options.memory_limit", "must be at least 64KiB (one WebAssembly page)")
			}
			if s.MemoryLimit > 4<<30 {
				c.Problem("options.memory_limit", "must be at most 4GiB (the 32-bit WebAssembly limit)")
			}
		},
	}

	metricsSpec = &Spec{
		Type: TypeMetrics, Provider: ProviderInternal, Doc: "the metrics, /stats and health endpoints",
		Address: AddressRule{Hint: `HOST:PORT to listen on, e.g. "0.0.0.0:8080"`, Check: hostPort},
		Auth: []AuthMethod{NoAuth, Auth("basic_auth", func(s *Metrics, k map[string]string) {
			s.BasicAuth, s.Username, s.Password = true, k["username"], Secret(k["password"])
		}, "username", "password")},
		Options: []Option{
			File("tls_cert_file", "serve HTTPS with this certificate (PEM)", func(s *Metrics) *string { return &s.TLSCertFile }),
			File("tls_key_file", "the certificate's key (PEM)", func(s *Metrics) *string { return &s.TLSKeyFile }),
		},
		New: func(e Entry) any { return &Metrics{Address: e.Address} },
		Check: func(st any, c *Checker) {
			s := st.(*Metrics)
			if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
				c.Problem("options.tls_cert_file", "tls_cert_file and tls_key_file go together: set both or neither")
				return
			}
			// The server loads the pair when it starts serving, after
			// start-up: refuse here what it would refuse then. Files that
			// cannot be read are reported already.
			if s.TLSCertFile == "" || c.Offline || !readable(s.TLSCertFile) || !readable(s.TLSKeyFile) {
				return
			}
			if _, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile); err != nil {
				c.Problem("options.tls_cert_file", "cannot load the certificate with options.tls_key_file: %v", err)
			}
		},
	}

	stateSpec = &Spec{
		Type: TypeInternal, Provider: ProviderState, Doc: "the router's writable directory: checkpoints, dead letters, the filter cache",
		Address: AddressRule{Hint: "a writable directory, e.g. /var/lib/vmware-event-router", Check: stateDir},
		Auth:    []AuthMethod{NoAuth},
		Options: []Option{
			Duration("replay_window", "24h", "how far back a restart resumes", func(s *State) *time.Duration { return &s.ReplayWindow }),
			Size("dead_letter_max_size", "100MiB", "the dead-letter file's size before it is rotated", func(s *State) *int64 { return &s.DeadLetterMaxSize }),
		},
		New: func(e Entry) any { return &State{Dir: e.Address} },
	}
)

// builtins returns the registry's first kinds: this package's. The metrics
// entry is spelled two ways.
func builtins() map[[2]string]*Spec {
	internalMetrics := *metricsSpec
	internalMetrics.Type, internalMetrics.Provider = TypeInternal, ProviderMetrics
	m := map[[2]string]*Spec{}
	for _, s := range []*Spec{wasmSpec, metricsSpec, &internalMetrics, stateSpec} {
		m[[2]string{s.Type, s.Provider}] = s
	}
	return m
}

// processorOptions are the options every processor entry takes, read into
// its Processor.
var processorOptions = []Option{
	Parsed("pattern", "", "an EventBridge event pattern the CloudEvent must match", compilePattern,
		func(p *Processor) **pattern.Pattern { return &p.Pattern }),
	Parsed("streams", "", "the stream entries whose events it takes (comma-separated names); empty: every stream", parseStreams,
		func(p *Processor) *[]string { return &p.Streams }),
}

func compilePattern(raw string) (*pattern.Pattern, error) {
	if raw == "" {
		return nil, nil
	}
	return pattern.Compile(raw)
}

func parseStreams(raw string) ([]string, error) {
	var names []string
	var errs []error
	if raw == "" {
		return nil, nil
	}
	for _, name := range strings.Split(raw, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("an empty stream name in %q (comma-separated stream entry names)", raw))
		case slices.Contains(names, name):
			errs = append(errs, fmt.Errorf("%q is named twice", name))
		default:
			names = append(names, name)
		}
	}
	return names, errors.Join(errs...)
}

func wasmAddress(s string, offline bool) (string, error) {
	fi, err := stat(s, offline, "read")
	if err == nil && fi != nil && !fi.IsDir() && !strings.HasSuffix(s, ".wasm") && !strings.HasSuffix(s, ".wasm.gz") {
		err = fmt.Errorf("must be a directory or a file ending in .wasm or .wasm.gz, got %q", s)
	}
	return s, err
}

func hostPort(s string, _ bool) (string, error) {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf(`must be HOST:PORT (e.g. "0.0.0.0:8080"), got %q`, s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("has an invalid port %q", port)
	}
	return s, nil
}

func stateDir(s string, offline bool) (string, error) {
	fi, err := stat(s, offline, "use")
	if err == nil && fi != nil && !fi.IsDir() {
		err = fmt.Errorf("%q is not a directory", s)
	}
	return s, err
}

// readable reports whether the file named s can be opened.
func readable(s string) bool {
	f, err := os.Open(s)
	if err == nil {
		_ = f.Close()
	}
	return err == nil
}

// stat stats a path the configuration names; offline, it returns nil: the
// path is checked where the file system is.
func stat(s string, offline bool, verb string) (os.FileInfo, error) {
	if offline {
		return nil, nil
	}
	fi, err := os.Stat(s)
	if err != nil {
		return nil, fmt.Errorf("cannot %s %q: %v", verb, s, errors.Unwrap(err))
	}
	return fi, nil
}
