// Package config reads and validates the router's configuration file: the
// spec's JSON array of {type, provider, address, auth, options} entries.
//
// Decoding is strict and complete: every problem of a file is reported at
// once, each with the file, the entry index, its type/provider and the field
// path, and no input makes the loader panic (see FuzzLoad).
package config

import (
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway/pattern"
)

// DefaultPath is where the daemon looks for its config without -config.
const DefaultPath = "/etc/vmware-event-router/config"

// Config is a validated configuration file.
type Config struct {
	// File is the path the configuration was read from.
	File string

	// Streams and Processors are every stream and processor entry, in
	// file order; at least one of each.
	Streams    []Stream
	Processors []Processor

	// The first stream entry: VCenter or VCSim (the spec's one-of-each
	// configs have exactly one).
	VCenter *VCenter
	VCSim   *VCSim

	// The first processor entry: OpenFaaS, EventBridge, CloudEvents or
	// Stdout.
	OpenFaaS    *OpenFaaS
	EventBridge *EventBridge
	CloudEvents *CloudEvents
	Stdout      *Stdout

	// Filters are the user's WebAssembly filters, in the order they run.
	Filters []WasmFilter

	Metrics Metrics

	// State is the router's writable directory; nil without one.
	State *State

	// Pattern is the first processor's "pattern" option; nil without one.
	Pattern *pattern.Pattern
}

// Stream is one stream entry: exactly one of VCenter and VCSim is set.
type Stream struct {
	Name    string // its "name", by default its provider name
	VCenter *VCenter
	VCSim   *VCSim
}

// Provider returns the stream's provider name.
func (s Stream) Provider() string {
	if s.VCSim != nil {
		return ProviderVCSim
	}
	return ProviderVCenter
}

// Processor is one processor entry: exactly one of OpenFaaS, EventBridge,
// CloudEvents and Stdout is set.
type Processor struct {
	Name        string // its "name", by default its provider name
	OpenFaaS    *OpenFaaS
	EventBridge *EventBridge
	CloudEvents *CloudEvents
	Stdout      *Stdout
	Pattern     *pattern.Pattern // the "pattern" option; nil without one
	Streams     []string         // the "streams" option; empty: every stream
}

// Provider returns the processor's provider name.
func (p Processor) Provider() string {
	switch {
	case p.OpenFaaS != nil:
		return ProviderOpenFaaS
	case p.EventBridge != nil:
		return ProviderEventBridge
	case p.CloudEvents != nil:
		return ProviderCloudEvents
	}
	return ProviderStdout
}

// StreamName returns the first stream entry's name.
func (c *Config) StreamName() string { return c.firstStream().Name }

// ProcessorName returns the first processor entry's name.
func (c *Config) ProcessorName() string { return c.firstProcessor().Name }

// StreamProvider returns the first stream entry's provider name.
func (c *Config) StreamProvider() string { return c.firstStream().Provider() }

// ProcessorProvider returns the first processor entry's provider name.
func (c *Config) ProcessorProvider() string { return c.firstProcessor().Provider() }

func (c *Config) firstStream() Stream {
	if len(c.Streams) == 0 {
		return Stream{Name: ProviderVCenter}
	}
	return c.Streams[0]
}

func (c *Config) firstProcessor() Processor {
	if len(c.Processors) == 0 {
		return Processor{Name: ProviderStdout}
	}
	return c.Processors[0]
}

// Entry types and providers, as they appear in the file.
const (
	TypeStream    = "stream"
	TypeProcessor = "processor"
	TypeFilter    = "filter"
	TypeMetrics   = "metrics"
	TypeInternal  = "internal"

	ProviderVCenter     = "vmware_vcenter"
	ProviderVCSim       = "vcsim"
	ProviderOpenFaaS    = "openfaas"
	ProviderEventBridge = "aws_event_bridge"
	ProviderCloudEvents = "cloudevents"
	ProviderStdout      = "stdout"
	ProviderWasm        = "wasm"
	ProviderInternal    = "internal"
	ProviderMetrics     = "metrics"
	ProviderState       = "state"
)

// VCenter is the stream/vmware_vcenter entry.
type VCenter struct {
	// Name is the entry's name: the stream's metric label, /stats key and
	// log attribute; empty means the provider name.
	Name     string
	Address  string // https://HOST[:PORT]/sdk
	Username string
	Password Secret
	Insecure bool   // skip TLS verification
	CAFile   string // extra CA bundle (PEM); empty: system roots
}

// VCSim is the stream/vcsim entry: the embedded simulator and its event
// generator.
type VCSim struct {
	Name string  // the entry's name, as VCenter's
	Rate float64 // generated events per second
}

// OpenFaaS is the processor/openfaas entry.
type OpenFaaS struct {
	Name            string // the entry's name: metric label and log attribute; empty means the provider name
	Address         string
	Username        string
	Password        Secret
	Async           bool
	RefreshInterval time.Duration
	Concurrency     int
	Timeout         time.Duration
	RetryLimit      int // 0: never give up
	QueueSize       int
	CallbackURL     string
}

// EventBridge is the processor/aws_event_bridge entry.
type EventBridge struct {
	Name            string // the entry's name, as OpenFaaS's
	AccessKeyID     string
	SecretAccessKey Secret
	Region          string
	EventBus        string
	RuleARN         string
	ResyncInterval  time.Duration
	Endpoint        string // empty: the SDK's default (AWS_ENDPOINT_URL is honoured)
	BatchLinger     time.Duration
	RetryLimit      int
	QueueSize       int
}

// CloudEvents is the processor/cloudevents entry: any CloudEvents HTTP
// sink. Its fields are those of cloudevents.Config, in the same order, so
// the daemon converts one into the other.
type CloudEvents struct {
	Name        string
	Address     string // the sink URL
	Mode        string // "binary" or "structured"
	Auth        string // "none", "basic_auth" or "bearer_token"
	Username    string
	Password    Secret
	Token       Secret
	TokenFile   string
	Timeout     time.Duration
	Concurrency int
	RetryLimit  int
	QueueSize   int
	Insecure    bool
	CAFile      string
}

// Stdout is the processor/stdout entry: one CloudEvent JSON per line.
type Stdout struct{}

// OnError is what a filter's failure does to the event.
type OnError string

// OnError policies.
const (
	OnErrorPass       OnError = "pass"
	OnErrorDrop       OnError = "drop"
	OnErrorDeadLetter OnError = "dead_letter"
)

// WasmFilter is one filter/wasm entry.
type WasmFilter struct {
	Index       int    // the entry's index in the file, for messages
	Name        string // the entry's name, for logs; by default "wasm", and names may repeat
	Address     string // a .wasm or .wasm.gz file, or a directory of them
	Timeout     time.Duration
	OnError     OnError
	Config      string // handed to the module
	MemoryLimit int64  // bytes
	PoolSize    int
}

// Metrics is the metrics/internal (or internal/metrics) entry.
type Metrics struct {
	Address     string // HOST:PORT
	BasicAuth   bool
	Username    string
	Password    Secret
	TLSCertFile string
	TLSKeyFile  string
}

// State is the internal/state entry: the router's one writable directory.
type State struct {
	Dir               string
	ReplayWindow      time.Duration
	DeadLetterMaxSize int64
}
