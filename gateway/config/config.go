// Package config reads and validates the router's configuration file: the
// spec's JSON array of {type, provider, address, auth, options} entries.
//
// Decoding is strict and complete: every problem of a file is reported at
// once, each with the file, the entry index, its type/provider and the field
// path, and no input makes the loader panic (see FuzzLoad).
//
// Each entry kind is declared once, by a Spec (spec.go): the filter, metrics
// and state kinds here, the stream and processor kinds in their providers'
// packages, registered by package providers.
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

	// Filters are the user's WebAssembly filters, in the order they run.
	Filters []WasmFilter

	Metrics Metrics

	// State is the router's writable directory; nil without one.
	State *State

	// Pattern is the first processor's "pattern" option; nil without one.
	Pattern *pattern.Pattern
}

// Stream is one stream entry.
type Stream struct {
	Name     string // its "name", by default its provider name
	Spec     *Spec  // its kind
	Settings any    // what Spec.New returned, filled in: *VCenter, *VCSim, ...
}

// Provider returns the stream's provider name.
func (s Stream) Provider() string { return s.Spec.Provider }

// VCenter returns the settings of a vmware_vcenter stream; nil for another
// kind.
func (s Stream) VCenter() *VCenter { return settingsAs[VCenter](s.Settings) }

// VCSim returns the settings of a vcsim stream; nil for another kind.
func (s Stream) VCSim() *VCSim { return settingsAs[VCSim](s.Settings) }

// Processor is one processor entry.
type Processor struct {
	Name     string           // its "name", by default its provider name
	Spec     *Spec            // its kind
	Settings any              // what Spec.New returned, filled in: *OpenFaaS, *EventBridge, ...
	Pattern  *pattern.Pattern // the "pattern" option; nil without one
	Streams  []string         // the "streams" option; empty: every stream
}

// Provider returns the processor's provider name.
func (p Processor) Provider() string { return p.Spec.Provider }

// OpenFaaS returns the settings of an openfaas processor; nil for another
// kind.
func (p Processor) OpenFaaS() *OpenFaaS { return settingsAs[OpenFaaS](p.Settings) }

// EventBridge returns the settings of an aws_event_bridge processor; nil
// for another kind.
func (p Processor) EventBridge() *EventBridge { return settingsAs[EventBridge](p.Settings) }

// Stdout returns the settings of a stdout processor; nil for another kind.
func (p Processor) Stdout() *Stdout { return settingsAs[Stdout](p.Settings) }

// settingsAs returns settings as a *T; nil when they are another kind's.
func settingsAs[T any](settings any) *T {
	s, _ := settings.(*T)
	return s
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
		return Stream{Name: ProviderVCenter, Spec: &Spec{Type: TypeStream, Provider: ProviderVCenter}}
	}
	return c.Streams[0]
}

func (c *Config) firstProcessor() Processor {
	if len(c.Processors) == 0 {
		return Processor{Name: ProviderStdout, Spec: &Spec{Type: TypeProcessor, Provider: ProviderStdout}}
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
	ContentMode     ContentMode
}

// ContentMode is how an OpenFaaS request carries the CloudEvent.
type ContentMode string

// Content modes.
const (
	// ContentModeJSON sends the structured CloudEvent as
	// application/json with no ce-* header: every OpenFaaS template
	// parses it, and CloudEvents SDKs refuse it rather than misread it.
	ContentModeJSON ContentMode = "json"
	// ContentModeStructured sends it as application/cloudevents+json.
	ContentModeStructured ContentMode = "structured"
	// ContentModeBinary sends the attributes as ce-* headers and data as
	// the body.
	ContentModeBinary ContentMode = "binary"
)

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
	// Auth is the auth.method: AuthAccessKey (AccessKeyID and
	// SecretAccessKey are set) or AuthIAMRole (the SDK's default chain).
	Auth string
	// AssumeRoleARN is options.aws_role_arn: a role assumed with STS on
	// top of either auth method; empty: none.
	AssumeRoleARN string
}

// The EventBridge entry's auth methods.
const (
	AuthAccessKey = "access_key"
	AuthIAMRole   = "aws_iam_role"
)

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
