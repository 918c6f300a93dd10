package eventbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"quamina.net/go/quamina"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/pattern"
)

// maxAlternatives caps how many quamina patterns one rule may expand into.
const maxAlternatives = pattern.MaxAlternatives

// compiled is a rule's event pattern ready to be evaluated locally. It is
// immutable once built and safe for concurrent use: each goroutine borrows
// its own quamina copy from a pool, since a quamina.Quamina must not be used
// by two goroutines at once (its flattener keeps per-call state).
type compiled struct {
	raw         string   // the rule's EventPattern as EventBridge returned it
	patterns    []string // what quamina evaluates; any one matching is a match
	unsupported []string // clauses over-approximated, sorted
	matchAll    bool     // every constraint was over-approximated away
	account     string
	region      string

	pool sync.Pool // of *quamina.Quamina, copies of the one patterns were added to
}

var _ gateway.Subscription = (*compiled)(nil)

// compile rewrites raw into what quamina v1.5.1 can evaluate and loads it.
// A clause using an operator quamina lacks is replaced by "matches
// anything" and named in unsupported; the result never matches less than
// the rule does in EventBridge.
func compile(raw, account, region string) (*compiled, error) {
	obj, err := pattern.ParseObject(raw)
	if err != nil {
		return nil, err
	}
	// EventBridge assigns the event's id when it accepts the entry, so no
	// local value can stand for it.
	alts, unsupported := pattern.Rewrite(obj, map[string]string{"id": "id (assigned by EventBridge)"})
	c := &compiled{raw: raw, account: account, region: region, unsupported: unsupported}
	for _, alt := range alts {
		if len(alt) == 0 {
			// One alternative lost every constraint: the rule can match
			// any event, so there is nothing left to evaluate.
			c.matchAll = true
			c.patterns = nil
			return c, nil
		}
		b, err := json.Marshal(alt)
		if err != nil {
			return nil, fmt.Errorf("event pattern: %w", err)
		}
		c.patterns = append(c.patterns, string(b))
	}
	if len(c.patterns) == 0 {
		c.matchAll = true
		return c, nil
	}
	q, err := quamina.New()
	if err != nil {
		return nil, fmt.Errorf("event pattern: %w", err)
	}
	for _, p := range c.patterns {
		if err := q.AddPattern(1, p); err != nil {
			// EventBridge accepted the rule; the local matcher's refusal is
			// its own limit, so nothing is held back: every event is sent
			// and EventBridge applies the rule.
			c.patterns, c.matchAll = nil, true
			c.unsupported = append(c.unsupported, fmt.Sprintf("a clause quamina rejects (%v)", err))
			return c, nil
		}
	}
	c.pool.New = func() any { return q.Copy() }
	return c, nil
}

// Match reports whether the rule can match the event EventBridge builds
// from ev's PutEvents entry.
func (c *compiled) Match(ev *gateway.Event) bool {
	if c.matchAll {
		return true
	}
	bp := envelopePool.Get().(*[]byte)
	env := appendEnvelope((*bp)[:0], ev, c.account, c.region)
	q := c.pool.Get().(*quamina.Quamina)
	xs, err := q.MatchesForEvent(env)
	c.pool.Put(q)
	*bp = env
	envelopePool.Put(bp)
	if err != nil {
		// An event quamina cannot read (not valid JSON) is sent anyway:
		// EventBridge has the last word and rejects it as MalformedDetail,
		// which dead-letters it instead of dropping it here unseen.
		return true
	}
	return len(xs) > 0
}

var envelopePool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// appendEnvelope appends the event EventBridge builds from ev's entry, as
// rules see it (the "id" is EventBridge's own; ev.ID stands in for it, and
// the compiler never lets a pattern look at it).
func appendEnvelope(b []byte, ev *gateway.Event, account, region string) []byte {
	b = append(b, `{"version":"0","id":`...)
	b = appendJSONString(b, ev.ID)
	b = append(b, `,"detail-type":`...)
	b = appendJSONString(b, ev.Subject)
	b = append(b, `,"source":`...)
	b = appendJSONString(b, ev.Source)
	b = append(b, `,"account":`...)
	b = appendJSONString(b, account)
	b = append(b, `,"time":"`...)
	b = ev.Time.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, `","region":`...)
	b = appendJSONString(b, region)
	b = append(b, `,"resources":[],"detail":`...)
	detail := bytes.TrimSpace(ev.JSON)
	if len(detail) == 0 {
		detail = []byte("null")
	}
	b = appendDetail(b, detail)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does. An escape right after a \uXXXX escape is
// written as \uXXXX too: see appendDetail.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	prevU := false
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			var short byte
			switch c {
			case '"', '\\':
				short = c
			case '\n':
				short = 'n'
			case '\r':
				short = 'r'
			case '\t':
				short = 't'
			}
			switch {
			case c >= 0x20 && short == 0:
				b = append(b, c)
				prevU = false
			case short != 0 && !prevU:
				b = append(b, '\\', short)
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
				prevU = true
			}
			i++
			continue
		}
		prevU = false
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\uFFFD"...)
			prevU = true
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// appendDetail appends the CloudEvent JSON in the form quamina reads
// correctly (see pattern.AppendJSON).
func appendDetail(b, detail []byte) []byte { return pattern.AppendJSON(b, detail) }

// patternDiff lists the leaf clauses added, removed and changed between
// two patterns, as "path=value" strings, for the log.
func patternDiff(oldRaw, newRaw string) (added, removed, changed []string) {
	flat := func(raw string) map[string]string {
		out := map[string]string{}
		var node any
		if json.Unmarshal([]byte(raw), &node) != nil {
			return out
		}
		var walk func(prefix string, n any)
		walk = func(prefix string, n any) {
			if m, ok := n.(map[string]any); ok {
				for k, v := range m {
					p := k
					if prefix != "" {
						p = prefix + "." + k
					}
					walk(p, v)
				}
				return
			}
			b, _ := json.Marshal(n)
			out[prefix] = string(b)
		}
		walk("", node)
		return out
	}
	o, n := flat(oldRaw), flat(newRaw)
	for k, v := range n {
		ov, ok := o[k]
		switch {
		case !ok:
			added = append(added, k+"="+v)
		case ov != v:
			changed = append(changed, k+": "+ov+" -> "+v)
		}
	}
	for k, v := range o {
		if _, ok := n[k]; !ok {
			removed = append(removed, k+"="+v)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}
