// Package eventbridge is the AWS EventBridge processor: it loads the
// configured rule's event pattern, evaluates the whole pattern locally so an
// event the rule can never match is never sent, and puts the rest on the
// configured event bus in batches within the PutEvents limits.
//
// It uses the AWS SDK for Go v2; v1 (github.com/aws/aws-sdk-go) reached end
// of support on 2025-07-31.
package eventbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// PutEvents limits, from the EventBridge API reference.
const (
	// MaxEntries is the most entries one PutEvents call may hold.
	MaxEntries = 10
	// MaxEntryBytes caps one entry and the sum of a call's entries, as
	// EventBridge computes entry sizes (see EntrySize).
	MaxEntryBytes = 256 * 1024
	maxDetailType = 128
	maxSource     = 256
)

// Timeouts of single AWS calls. The SDK's HTTP client has no overall
// deadline of its own, and a black-holed endpoint must not hang the
// dispatcher or the rule sync.
const (
	putTimeout  = 30 * time.Second
	listTimeout = 15 * time.Second
)

// maxIdleConns is how many idle connections the client keeps: one per
// PutEvents call the dispatcher may have in flight (its default
// concurrency; EventBridge has no concurrency option), plus a few for the
// rule sync.
const maxIdleConns = gateway.DefaultConcurrency + 8

// API is the part of the EventBridge client the processor uses. It exists so
// tests can wrap the real client to inject partial failures.
type API interface {
	PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, optFns ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
	ListRules(ctx context.Context, in *eventbridge.ListRulesInput, optFns ...func(*eventbridge.Options)) (*eventbridge.ListRulesOutput, error)
}

// Processor delivers events to one EventBridge bus.
type Processor struct {
	cfg      config.EventBridge
	log      *slog.Logger
	m        *metrics.Metrics
	api      API
	account  string // from the rule ARN: the envelope's "account"
	ruleName string // from the rule ARN: narrows ListRules
	name     string // the entry's name: metric label and log attribute
	bus      string // the bus name, for ListRules and messages

	// pageLimit, when set, is ListRules' page size (tests use it to force
	// pagination).
	pageLimit int32
	// retryMin and retryMax bound the wait between attempts to load the
	// rule while AWS cannot be reached at start.
	retryMin, retryMax time.Duration

	state    types.RuleState // the rule's state at the last sync
	cur      atomic.Pointer[compiled]
	loaded   chan struct{}
	loadOnce sync.Once
	notReady atomic.Pointer[string]

	syncOK, syncFailed prometheus.Counter

	startOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

var (
	_ gateway.Processor = (*Processor)(nil)
	_ gateway.Batcher   = (*Processor)(nil)
)

// New builds the processor and its AWS client. It makes no AWS call: Start
// does.
func New(ctx context.Context, cfg config.EventBridge, log *slog.Logger, m *metrics.Metrics) (*Processor, error) {
	arn, err := parseRuleARN(cfg.RuleARN)
	if err != nil {
		return nil, err
	}
	bus := busName(cfg.EventBus)
	if arn.bus != bus {
		return nil, fmt.Errorf("options.aws_eventbridge_rule_arn %q names a rule on event bus %q, but options.aws_eventbridge_event_bus is %q: the rule must be on the bus events are put on",
			cfg.RuleARN, arn.bus, cfg.EventBus)
	}
	if arn.region != cfg.Region {
		return nil, fmt.Errorf("options.aws_eventbridge_rule_arn %q is in region %q, but options.aws_region is %q",
			cfg.RuleARN, arn.region, cfg.Region)
	}
	opts := append(credentialsOptions(cfg),
		awsconfig.WithRegion(cfg.Region),
		// The dispatcher owns retries (bounded, with jitter, per entry)
		// and holds a throttled bus; SDK retries underneath would
		// multiply them and keep one Deliver call spinning. One attempt
		// per call, bounded by putTimeout. STS calls for credentials run
		// inside those calls and are retried with them.
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			// Every call goes to the one EventBridge endpoint, up to the
			// dispatcher's concurrency at once: keep that many idle
			// connections, or each burst re-dials (and re-handshakes
			// TLS) all but the SDK's default of 10.
			tr.MaxIdleConns = maxIdleConns
			tr.MaxIdleConnsPerHost = maxIdleConns
			// The SDK's credential cache fetches from STS without the
			// caller's deadline: an STS that accepts the connection but
			// never answers must not hold every later call's
			// credentials for ever.
			tr.ResponseHeaderTimeout = putTimeout
		})),
	)
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		if cfg.Auth == config.AuthIAMRole {
			return nil, fmt.Errorf("%s: %w", chainSource, err)
		}
		return nil, fmt.Errorf("aws sdk configuration: %w", err)
	}
	withRole(&awsCfg, cfg)
	client := eventbridge.NewFromConfig(awsCfg, func(o *eventbridge.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	name := cfg.Name
	if name == "" {
		name = config.ProviderEventBridge
	}
	p := &Processor{
		cfg:        cfg,
		name:       name,
		log:        log.With(slog.String("processor", name)),
		m:          m,
		api:        client,
		account:    arn.account,
		ruleName:   arn.name,
		bus:        bus,
		retryMin:   time.Second,
		retryMax:   30 * time.Second,
		loaded:     make(chan struct{}),
		syncOK:     m.EBRuleSyncs.WithLabelValues(name, "ok"),
		syncFailed: m.EBRuleSyncs.WithLabelValues(name, "failed"),
		done:       make(chan struct{}),
	}
	reason := fmt.Sprintf("eventbridge rule %s not loaded yet", cfg.RuleARN)
	p.notReady.Store(&reason)
	// The label values are a fixed set: create them so /metrics shows
	// zeros before the first failure.
	for _, c := range errorCodes {
		m.EBFailedEntries.WithLabelValues(name, c)
	}
	m.EBFailedEntries.WithLabelValues(name, "other")
	return p, nil
}

type ruleARN struct {
	region, account, bus, name string
}

// parseRuleARN reads arn:PARTITION:events:REGION:ACCOUNT:rule/[BUS/]NAME.
func parseRuleARN(s string) (ruleARN, error) {
	bad := func(why string) error {
		return fmt.Errorf(`options.aws_eventbridge_rule_arn: %s: want "arn:aws:events:REGION:ACCOUNT:rule/NAME" or ".../rule/BUS/NAME", got %q`, why, s)
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "events" {
		return ruleARN{}, bad("not an EventBridge ARN")
	}
	res, ok := strings.CutPrefix(parts[5], "rule/")
	if !ok || res == "" {
		return ruleARN{}, bad("not a rule ARN")
	}
	a := ruleARN{region: parts[3], account: parts[4], bus: "default", name: res}
	if i := strings.LastIndexByte(res, '/'); i >= 0 {
		a.bus, a.name = res[:i], res[i+1:]
	}
	if a.name == "" || a.bus == "" {
		return ruleARN{}, bad("empty rule or bus name")
	}
	return a, nil
}

// busName returns the bus name of a name or an event-bus ARN.
func busName(s string) string {
	if strings.HasPrefix(s, "arn:") {
		if i := strings.Index(s, ":event-bus/"); i >= 0 {
			return s[i+len(":event-bus/"):]
		}
	}
	return s
}

// Start loads the rule. A rule that is not found, has no event pattern, or
// that the credentials may not list is a configuration error and returned;
// when AWS cannot be reached, the rule is waited for in the background and
// Ready says why. Either way the rule is then re-read every
// resync_interval until ctx is done or Close is called.
func (p *Processor) Start(ctx context.Context) error {
	started := false
	p.startOnce.Do(func() { started = true })
	if !started {
		return errors.New("eventbridge processor already started")
	}
	err := p.sync(ctx)
	var ce *configError
	if errors.As(err, &ce) {
		close(p.done)
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	if err != nil {
		p.setNotReady(fmt.Sprintf("waiting for AWS EventBridge to load rule %s: %v", p.cfg.RuleARN, err))
		p.log.Warn("cannot reach AWS EventBridge to load the rule; waiting for it (readyz is 503 meanwhile)",
			slog.String("rule_arn", p.cfg.RuleARN), slog.String("event_bus", p.bus), slog.Any("err", err))
	}
	go p.run(runCtx, err == nil)
	return nil
}

// Ready returns nil once the rule's pattern is loaded, else why not.
func (p *Processor) Ready() error {
	if r := p.notReady.Load(); r != nil {
		return errors.New(*r)
	}
	return nil
}

func (p *Processor) setNotReady(reason string) {
	select {
	case <-p.loaded:
		// Once loaded the processor stays ready: resync failures keep the
		// last good pattern, and readiness does not follow AWS's health.
	default:
		p.notReady.Store(&reason)
	}
}

// Subscription blocks until the rule is loaded (or ctx is done) and returns
// its pattern as a predicate over events. The returned value is a snapshot;
// a resync that changes the pattern swaps in a new one for the next call.
func (p *Processor) Subscription(ctx context.Context) (gateway.Subscription, error) {
	select {
	case <-p.loaded:
		return p.cur.Load(), nil
	default:
	}
	select {
	case <-p.loaded:
		return p.cur.Load(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Destinations returns the configured bus: every event the routing filter
// passed goes there.
func (p *Processor) Destinations(*gateway.Event) []string {
	return []string{p.cfg.EventBus}
}

// BatchLimits returns PutEvents' limits and the configured linger.
func (p *Processor) BatchLimits() gateway.BatchLimits {
	return gateway.BatchLimits{
		MaxEvents: MaxEntries,
		MaxBytes:  MaxEntryBytes,
		Size:      EntrySize,
		Linger:    p.cfg.BatchLinger,
	}
}

// Close stops the rule resync and waits for it.
func (p *Processor) Close() error {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	return nil
}
