// Package pattern evaluates EventBridge event patterns locally with
// quamina: the processor option "pattern" (Compile, Decorate) and the
// EventBridge processor's copy of its rule (Rewrite, AppendJSON) share the
// translation of EventBridge's pattern language into what quamina v1.5.1
// evaluates.
package pattern

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// MaxAlternatives caps how many quamina patterns one pattern may expand
// into when its "$or" clauses are multiplied out. Past the cap the "$or"
// that would exceed it is dropped (over-approximated) instead.
const MaxAlternatives = 256

// ParseObject reads raw as one JSON object, numbers kept as written.
func ParseObject(raw string) (map[string]any, error) {
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
	return obj, nil
}

// Rewrite turns an EventBridge pattern into alternatives quamina can
// evaluate (any one matching is a match). A clause using an operator
// quamina lacks is left out, which can only make the result match more, and
// named in unsupported (sorted). skipTop names top-level fields to leave out
// the same way, with the note to record for each.
func Rewrite(obj map[string]any, skipTop map[string]string) (alts []map[string]any, unsupported []string) {
	r := rewriter{unsupported: map[string]bool{}, skipTop: skipTop}
	alts = r.object(obj, "", true)
	for op := range r.unsupported {
		unsupported = append(unsupported, op)
	}
	sort.Strings(unsupported)
	return alts, unsupported
}

// rewriter turns an EventBridge pattern into quamina patterns, collecting
// the names of the clauses it had to over-approximate.
type rewriter struct {
	unsupported map[string]bool
	skipTop     map[string]string // top-level fields left out, with their note
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
		if note, skip := r.skipTop[k]; top && skip {
			r.note(note)
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
	if len(a)*len(b) > MaxAlternatives {
		// Leaving b out keeps a superset of the rule's matches.
		r.note(fmt.Sprintf("$or (over %d combinations)", MaxAlternatives))
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

// AppendJSON appends the JSON document detail (a CloudEvent), rewriting any escape that
// directly follows a \uXXXX escape into the \uXXXX form. quamina v1.5.1's
// flattener misreads such a string (`"a\u003c\"b"`, which encoding/json
// writes for a<"b, is read as ending at the <) and would then match it
// wrongly, possibly holding back an event the rule matches. A run of
// \uXXXX escapes is read correctly, and the rewrite keeps the JSON's
// meaning.
func AppendJSON(b, detail []byte) []byte {
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
