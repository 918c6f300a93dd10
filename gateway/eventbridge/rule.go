package eventbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// configError is a rule problem no retry fixes: the rule is not there, has
// no pattern, or the credentials may not list it.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// Error codes of ListRules that mean the configuration is wrong rather than
// AWS unreachable.
var listConfigCodes = map[string]bool{
	"AccessDeniedException":       true,
	"UnrecognizedClientException": true,
	"InvalidClientTokenId":        true,
	"InvalidSignatureException":   true,
	"SignatureDoesNotMatch":       true,
	"IncompleteSignature":         true,
	"ResourceNotFoundException":   true,
	"ValidationException":         true,
}

// fieldHint names the options a rule problem is about.
const fieldHint = "options.aws_eventbridge_rule_arn, options.aws_eventbridge_event_bus"

// fetchRule pages through ListRules on the bus until the rule with the
// configured ARN. It needs only events:ListRules.
func (p *Processor) fetchRule(ctx context.Context) (types.Rule, error) {
	in := &eventbridge.ListRulesInput{
		EventBusName: aws.String(p.cfg.EventBus),
		// The rule's name is a prefix of itself: this keeps the listing to
		// a page on buses with many rules.
		NamePrefix: aws.String(p.ruleName),
	}
	if p.pageLimit > 0 {
		in.Limit = aws.Int32(p.pageLimit)
	}
	for page := 0; ; page++ {
		cctx, cancel := context.WithTimeout(ctx, listTimeout)
		out, err := p.api.ListRules(cctx, in)
		cancel()
		if err != nil {
			if cerr := credentialsProblem(err); cerr != nil {
				return types.Rule{}, cerr
			}
			var ae smithy.APIError
			if errors.As(err, &ae) && listConfigCodes[ae.ErrorCode()] {
				return types.Rule{}, &configError{fmt.Errorf("eventbridge: listing rules on event bus %q to find rule %s was refused (%s): %w; check %s and that the credentials allow events:ListRules",
					p.bus, p.cfg.RuleARN, ae.ErrorCode(), err, fieldHint)}
			}
			return types.Rule{}, fmt.Errorf("eventbridge: listing rules on event bus %q: %w", p.bus, err)
		}
		for _, r := range out.Rules {
			if aws.ToString(r.Arn) == p.cfg.RuleARN {
				if aws.ToString(r.EventPattern) == "" {
					return types.Rule{}, &configError{fmt.Errorf("eventbridge: rule %s on event bus %q has no event pattern (a schedule rule?): the router forwards what the pattern matches; check %s",
						p.cfg.RuleARN, p.bus, fieldHint)}
				}
				return r, nil
			}
		}
		if aws.ToString(out.NextToken) == "" {
			return types.Rule{}, &configError{fmt.Errorf("eventbridge: rule %s not found on event bus %q (%d page(s) of ListRules with name prefix %q); check %s",
				p.cfg.RuleARN, p.bus, page+1, p.ruleName, fieldHint)}
		}
		in.NextToken = out.NextToken
	}
}

// sync reads the rule once and, when its pattern changed, compiles and
// swaps it in. It returns a *configError for a wrong configuration.
func (p *Processor) sync(ctx context.Context) error {
	rule, err := p.fetchRule(ctx)
	if err != nil {
		p.syncFailed.Inc()
		return err
	}
	raw := aws.ToString(rule.EventPattern)
	old := p.cur.Load()
	if old == nil || old.raw != raw {
		c, err := compile(raw, p.account, p.cfg.Region)
		if err != nil {
			p.syncFailed.Inc()
			return &configError{fmt.Errorf("eventbridge: rule %s on event bus %q: %w", p.cfg.RuleARN, p.bus, err)}
		}
		p.install(old, c)
	}
	if rule.State != p.state {
		// Only sync changes p.state, and syncs never overlap: Start's runs
		// before the goroutine that makes the others.
		p.state = rule.State
		if rule.State != "" && rule.State != types.RuleStateEnabled {
			p.log.Warn("the eventbridge rule is not enabled: events are put on the bus but the rule triggers no target",
				slog.String("rule_arn", p.cfg.RuleARN), slog.String("state", string(rule.State)))
		}
	}
	p.syncOK.Inc()
	p.m.EBRuleLastSync.WithLabelValues(p.name).SetToCurrentTime()
	return nil
}

// install swaps in a newly compiled pattern and says what changed.
func (p *Processor) install(old, c *compiled) {
	p.cur.Store(c)
	if len(c.unsupported) > 0 {
		p.log.Warn("the rule's pattern uses operators the local matcher lacks; those clauses match every event here (EventBridge still applies them)",
			slog.String("rule_arn", p.cfg.RuleARN), slog.Any("operators", c.unsupported))
	}
	if old == nil {
		p.log.Info("eventbridge rule loaded",
			slog.String("rule_arn", p.cfg.RuleARN), slog.String("event_bus", p.bus), slog.String("pattern", c.raw))
	} else {
		added, removed, changed := patternDiff(old.raw, c.raw)
		p.log.Info("eventbridge rule pattern changed",
			slog.String("rule_arn", p.cfg.RuleARN), slog.String("old", old.raw), slog.String("new", c.raw),
			slog.Any("added", added), slog.Any("removed", removed), slog.Any("changed", changed))
	}
	p.loadOnce.Do(func() {
		p.notReady.Store(nil)
		close(p.loaded)
	})
}

// run waits for the rule when it is not loaded yet, then re-reads it every
// resync_interval.
func (p *Processor) run(ctx context.Context, loaded bool) {
	defer close(p.done)
	wait := p.retryMin
	for !loaded {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(wait)):
		}
		err := p.sync(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		var ce *configError
		if errors.As(err, &ce) {
			// AWS answered, and the answer is that the configuration is
			// wrong. Start has returned already, so say it loudly and keep
			// asking: the rule may yet be created.
			p.log.Error("eventbridge rule cannot be used; events are held until it can",
				slog.String("rule_arn", p.cfg.RuleARN), slog.Any("err", err))
			p.setNotReady(err.Error())
		} else {
			p.log.Warn("AWS EventBridge still unreachable; the rule is not loaded yet",
				slog.String("rule_arn", p.cfg.RuleARN), slog.Any("err", err))
			p.setNotReady(fmt.Sprintf("waiting for AWS EventBridge to load rule %s: %v", p.cfg.RuleARN, err))
		}
		wait = min(2*wait, p.retryMax)
	}
	if p.cfg.ResyncInterval <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(p.cfg.ResyncInterval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Warn("eventbridge rule resync failed; keeping the last good pattern",
				slog.String("rule_arn", p.cfg.RuleARN), slog.String("pattern", p.cur.Load().raw),
				slog.Duration("pattern_age", time.Since(last).Round(time.Second)), slog.Any("err", err))
			continue
		}
		last = time.Now()
	}
}

// jitter spreads d over [d/2, d) so that routers restarted together do not
// call AWS in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// isUnreachable says whether a failed AWS call means AWS as a whole could
// not be reached: no HTTP response at all, or a 5xx.
func isUnreachable(err error) bool {
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) {
		return true
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		if re.Response == nil || re.Response.Response == nil {
			return true
		}
		code := re.HTTPStatusCode()
		return code == 0 || code >= http.StatusInternalServerError
	}
	return true
}
