package eventbridge

import (
	"context"
	"math"
	"regexp"
	"sync"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
)

// Spec is the processor/aws_event_bridge entry kind.
var Spec = &config.Spec{
	Type: config.TypeProcessor, Provider: config.ProviderEventBridge, Doc: "an EventBridge event bus, for the events its rule matches",
	Auth: []config.AuthMethod{
		config.Auth(config.AuthAccessKey, func(s *config.EventBridge, k map[string]string) {
			s.Auth, s.AccessKeyID, s.SecretAccessKey = config.AuthAccessKey, k["aws_access_key_id"], config.Secret(k["aws_secret_access_key"])
		}, "aws_access_key_id", "aws_secret_access_key"),
		// No secret: the SDK's default chain finds the credentials (IRSA
		// web identity, ECS or EKS Pod Identity, EC2 role, environment).
		config.Auth(config.AuthIAMRole, func(s *config.EventBridge, _ map[string]string) { s.Auth = config.AuthIAMRole }),
	},
	Options: []config.Option{
		config.String("aws_region", "", `the bus's region, e.g. "eu-central-1" (required)`, func(s *config.EventBridge) *string { return &s.Region }),
		config.String("aws_eventbridge_event_bus", "default", "the bus events are put on: its name or ARN", func(s *config.EventBridge) *string { return &s.EventBus }),
		config.String("aws_eventbridge_rule_arn", "", "the rule whose pattern selects the events (required)", func(s *config.EventBridge) *string { return &s.RuleARN }),
		config.Duration("resync_interval", "5m", "how often the rule is read again", func(s *config.EventBridge) *time.Duration { return &s.ResyncInterval }),
		config.URL("endpoint", "the EventBridge endpoint; AWS_ENDPOINT_URL is honoured too", func(s *config.EventBridge) *string { return &s.Endpoint }),
		config.Duration("batch_linger", "10ms", "how long a batch waits for more events", func(s *config.EventBridge) *time.Duration { return &s.BatchLinger }),
		config.Int("retry_limit", "20", "attempts before dead-lettering; 0 never gives up", 0, math.MaxInt, func(s *config.EventBridge) *int { return &s.RetryLimit }),
		config.Int("queue_size", "10000", "events waiting", 1, math.MaxInt, func(s *config.EventBridge) *int { return &s.QueueSize }),
		config.String("aws_role_arn", "", "a role assumed with STS on top of either auth method (session vmware-event-router)", func(s *config.EventBridge) *string { return &s.AssumeRoleARN }),
	},
	New:   func(e config.Entry) any { return &config.EventBridge{Name: e.Name} },
	Check: check,
	BuildProcessor: func(ctx context.Context, st any, env config.Env) (gateway.DispatcherOptions, error) {
		c := st.(*config.EventBridge)
		p, err := New(ctx, *c, env.Log, env.Metrics)
		if err != nil {
			return gateway.DispatcherOptions{}, err
		}
		return gateway.DispatcherOptions{Processor: p, StatsName: c.RuleARN, QueueSize: c.QueueSize, RetryLimit: c.RetryLimit}, nil
	},
}

// What AWS accepts, checked when the file is read so that `check` refuses
// what the daemon would: a region such as "eu-central-1" or
// "us-gov-west-1"; a bus name; a rule ARN
// arn:PARTITION:events:REGION:ACCOUNT:rule/[BUS/]NAME, where a partner bus
// name has slashes of its own. They are compiled at the first check, not
// at start-up: busPattern's {1,256} alone makes 340 KB of program, which a
// router without an EventBridge entry would carry for nothing.
var (
	regionPattern  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z]{2,}(-[a-z]+)+-[0-9]+$`) })
	busPattern     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[/.\-_A-Za-z0-9]{1,256}$`) })
	ruleARNPattern = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^arn:[a-z-]+:events:([a-z0-9-]+):[0-9]+:rule/(?:(.+)/)?([.\-_A-Za-z0-9]{1,64})$`)
	})
	// roleARNPattern is an IAM role: arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME.
	roleARNPattern = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^arn:[a-z-]+:iam::[0-9]{12}:role/(?:[\x21-\x7e]+/)?[\w+=,.@-]{1,64}$`)
	})
)

// check checks the region, the bus and the rule ARN, and that the rule is
// in that region and on that bus.
func check(st any, c *config.Checker) {
	s := st.(*config.EventBridge)
	if s.AssumeRoleARN != "" && !roleARNPattern().MatchString(s.AssumeRoleARN) {
		c.Problem("options.aws_role_arn", `must be an IAM role ARN "arn:aws:iam::ACCOUNT:role/NAME" (ACCOUNT: 12 digits), got %q`, s.AssumeRoleARN)
	}
	switch {
	case s.Region == "":
		c.Problem("options.aws_region", `required (e.g. "eu-central-1")`)
	case !regionPattern().MatchString(s.Region):
		c.Problem("options.aws_region", `must be an AWS region such as "eu-central-1", got %q`, s.Region)
	}
	bus := busName(s.EventBus)
	if !busPattern().MatchString(bus) {
		c.Problem("options.aws_eventbridge_event_bus", `must be an event bus name (letters, digits, ".", "-", "_", "/"; at most 256) or its ARN, got %q`, s.EventBus)
	}
	const arnField = "options.aws_eventbridge_rule_arn"
	if s.RuleARN == "" {
		c.Problem(arnField, `required (e.g. "arn:aws:events:eu-central-1:1234567890:rule/vmware-event-router")`)
		return
	}
	m := ruleARNPattern().FindStringSubmatch(s.RuleARN)
	if m == nil {
		c.Problem(arnField, `must be a rule ARN "arn:aws:events:REGION:ACCOUNT:rule/NAME" or ".../rule/BUS/NAME", got %q`, s.RuleARN)
		return
	}
	region, ruleBus := m[1], m[2]
	if ruleBus == "" {
		ruleBus = "default"
	}
	if region != s.Region && s.Region != "" {
		c.Problem(arnField, "%q is in region %q, but options.aws_region is %q", s.RuleARN, region, s.Region)
	}
	if ruleBus != bus {
		c.Problem(arnField, "%q names a rule on event bus %q, but options.aws_eventbridge_event_bus is %q: the rule must be on the bus events are put on", s.RuleARN, ruleBus, s.EventBus)
	}
}
