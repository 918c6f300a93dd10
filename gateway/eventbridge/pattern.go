package eventbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"quamina.net/go/quamina"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// maxAlternatives caps how many quamina patterns one rule may expand into
// when its "$or" clauses are multiplied out. Past the cap the "$or" that
// would exceed it is dropped (over-approximated) instead.
const maxAlternatives = 256

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
	var node any
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&node); err != nil {
		return nil, fmt.Errorf("event pattern is not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("event pattern has data after its JSON object")
	}
	obj, ok := node.(map[string]any)
	if !ok {
		return nil, errors.New("event pattern is not a JSON object")
	}
	rw := rewriter{unsupported: map[string]bool{}}
	alts := rw.object(obj, "", true)
	c := &compiled{raw: raw, account: account, region: region}
	for op := range rw.unsupported {
		c.unsupported = append(c.unsupported, op)
	}
	sort.Strings(c.unsupported)
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

// appendDetail appends the CloudEvent JSON, rewriting any escape that
// directly follows a \uXXXX escape into the \uXXXX form. quamina v1.5.1's
// flattener misreads such a string (`"a\u003c\"b"`, which encoding/json
// writes for a<"b, is read as ending at the <) and would then match it
// wrongly, possibly holding back an event the rule matches. A run of
// \uXXXX escapes is read correctly, and the rewrite keeps the JSON's
// meaning.
func appendDetail(b, detail []byte) []byte {
	if !bytes.Contains(detail, []byte(`\u`)) {
		return append(b, detail...)
	}
	const hex = "0123456789abcdef"
	prevU := false
	for i := 0; i < len(detail); {
		c := detail[i]
		if c != '\\' || i+1 == len(detail) {
			b = append(b, c)
			prevU = false
			i++
			continue
		}
		n := detail[i+1]
		if n == 'u' && i+6 <= len(detail) {
			b = append(b, detail[i:i+6]...)
			prevU = true
			i += 6
			continue
		}
		var raw byte
		switch n {
		case '"', '\\', '/':
			raw = n
		case 'b':
			raw = '\b'
		case 'f':
			raw = '\f'
		case 'n':
			raw = '\n'
		case 'r':
			raw = '\r'
		case 't':
			raw = '\t'
		}
		if prevU && raw != 0 {
			b = append(b, '\\', 'u', '0', '0', hex[raw>>4], hex[raw&0xf])
		} else {
			b = append(b, c, n)
			prevU = false
		}
		i += 2
	}
	return b
}

// rewriter turns an EventBridge pattern into quamina patterns, collecting
// the names of the clauses it had to over-approximate.
type rewriter struct {
	unsupported map[string]bool
}

func (r *rewriter) note(what string) { r.unsupported[what] = true }

// object rewrites a pattern object into alternatives (an OR of
// "$or"-free patterns). Within one alternative every field must match, as
// in EventBridge; a field whose clause quamina cannot evaluate is left out,
// which can only make the pattern match more.
func (r *rewriter) object(node map[string]any, path string, top bool) []map[string]any {
	alts := []map[string]any{{}}
	keys := make([]string, 0, len(node))
	for k := range node {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := node[k]
		if k == "$or" {
			arr, ok := v.([]any)
			if !ok || len(arr) == 0 {
				r.note("$or")
				continue
			}
			var ors []map[string]any
			for _, el := range arr {
				o, ok := el.(map[string]any)
				if !ok {
					ors = nil
					r.note("$or")
					break
				}
				ors = append(ors, r.object(o, path, top)...)
			}
			if ors != nil {
				alts = r.cross(alts, ors)
			}
			continue
		}
		field := k
		if path != "" {
			field = path + "." + k
		}
		if top && k == "id" {
			// EventBridge assigns the event's id when it accepts the
			// entry, so no local value can stand for it.
			r.note("id (assigned by EventBridge)")
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			var wrapped []map[string]any
			for _, sub := range r.object(v, field, false) {
				if len(sub) == 0 {
					wrapped = append(wrapped, map[string]any{})
					continue
				}
				wrapped = append(wrapped, map[string]any{k: sub})
			}
			alts = r.cross(alts, wrapped)
		case []any:
			vals, ok := r.values(v)
			if !ok {
				continue
			}
			alts = r.cross(alts, []map[string]any{{k: vals}})
		default:
			// EventBridge itself refuses such a rule; drop the clause.
			r.note("non-array value")
		}
	}
	return alts
}

// cross returns every combination of one alternative of a and one of b.
func (r *rewriter) cross(a, b []map[string]any) []map[string]any {
	if len(b) == 0 {
		return a
	}
	if len(a)*len(b) > maxAlternatives {
		// Leaving b out keeps a superset of the rule's matches.
		r.note(fmt.Sprintf("$or (over %d combinations)", maxAlternatives))
		return a
	}
	out := make([]map[string]any, 0, len(a)*len(b))
	for _, x := range a {
		for _, y := range b {
			out = append(out, r.merge(x, y))
		}
	}
	return out
}

// merge returns x and y's fields together, merging nested objects. Two
// leaf clauses on one field (possible only through "$or") must both hold;
// quamina cannot say that in one pattern, so the first is kept, which
// matches more.
func (r *rewriter) merge(x, y map[string]any) map[string]any {
	out := make(map[string]any, len(x)+len(y))
	for k, v := range x {
		out[k] = v
	}
	for k, v := range y {
		old, ok := out[k]
		if !ok {
			out[k] = v
			continue
		}
		om, ok1 := old.(map[string]any)
		vm, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			out[k] = r.merge(om, vm)
			continue
		}
		r.note("two clauses on one field")
	}
	return out
}

// values rewrites a field's list of allowed values. It returns false when
// the clause must be over-approximated (left out).
func (r *rewriter) values(arr []any) ([]any, bool) {
	out := make([]any, 0, len(arr))
	exclusive := false
	for _, el := range arr {
		switch el := el.(type) {
		case string, json.Number, bool, nil:
			out = append(out, el)
		case map[string]any:
			if len(el) != 1 {
				r.note("matcher object with several keys")
				return nil, false
			}
			for op, val := range el {
				v, excl, ok := r.operator(op, val)
				if !ok {
					return nil, false
				}
				exclusive = exclusive || excl
				out = append(out, v)
			}
		default:
			r.note("nested array")
			return nil, false
		}
	}
	if exclusive && len(out) > 1 {
		// quamina accepts "exists" and "anything-but" only alone in a
		// field's list.
		r.note("exists or anything-but combined with other values")
		return nil, false
	}
	return out, true
}

// operator rewrites one {"op": value} matcher; excl says quamina wants it
// alone in its list.
func (r *rewriter) operator(op string, val any) (out any, excl, ok bool) {
	switch op {
	case "prefix":
		if s, isStr := val.(string); isStr {
			return map[string]any{op: s}, false, true
		}
		if m, isObj := val.(map[string]any); isObj {
			if _, ci := m["equals-ignore-case"]; ci {
				r.note("prefix with equals-ignore-case")
				return nil, false, false
			}
		}
	case "wildcard", "equals-ignore-case":
		if s, isStr := val.(string); isStr {
			if op == "wildcard" && strings.Contains(s, "**") {
				// EventBridge refuses consecutive wildcards; quamina too.
				break
			}
			return map[string]any{op: s}, false, true
		}
	case "exists":
		if b, isBool := val.(bool); isBool {
			return map[string]any{op: b}, true, true
		}
	case "anything-but":
		switch v := val.(type) {
		case string:
			return map[string]any{op: []any{v}}, true, true
		case []any:
			if len(v) == 0 {
				break
			}
			for _, s := range v {
				if _, isStr := s.(string); !isStr {
					r.note("anything-but with numbers")
					return nil, false, false
				}
			}
			return map[string]any{op: v}, true, true
		case json.Number:
			r.note("anything-but with numbers")
			return nil, false, false
		case map[string]any:
			for inner := range v {
				r.note("anything-but with " + inner)
			}
			return nil, false, false
		}
	case "numeric", "cidr", "suffix":
		r.note(op)
		return nil, false, false
	default:
		r.note(op)
		return nil, false, false
	}
	r.note(op + " (malformed)")
	return nil, false, false
}

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
