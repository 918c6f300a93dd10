package guest

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Event is the CloudEvent being filtered, in structured JSON. Its bytes are
// valid only during the handler call: copy what you keep.
//
// The accessors scan the JSON without decoding it into a tree, which keeps
// a filter fast and small; encoding/json works too (on JSON()) when a
// filter needs more.
type Event struct {
	json []byte
}

// NewEvent wraps a CloudEvent's JSON, for tests of handlers.
func NewEvent(json []byte) *Event { return &Event{json: json} }

// JSON returns the whole CloudEvent.
func (e *Event) JSON() []byte { return e.json }

// Subject returns the subject attribute: the vCenter event class, e.g.
// "VmPoweredOffEvent".
func (e *Event) Subject() string {
	s, _ := e.String("subject")
	return s
}

// String returns the string at path, a sequence of object keys from the
// top of the event: String("data", "Vm", "Name") is the VM's name.
func (e *Event) String(path ...string) (string, bool) {
	raw, ok := e.Raw(path...)
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	return unquote(raw)
}

// Raw returns the JSON value at path, undecoded.
func (e *Event) Raw(path ...string) ([]byte, bool) {
	v := e.json
	for _, key := range path {
		start, end, ok := member(v, key)
		if !ok {
			return nil, false
		}
		v = v[start:end]
	}
	return v, true
}

// With returns a copy of the event with the top-level attribute attr set to
// the string value (added if absent): With("subject", "VmStopped"). Use
// it with Replace.
//
// Once passed to Replace, the copy belongs to the SDK: the router copies a
// replacement when the handler returns, and the next event's With builds
// in the same bytes, so that a filter rewriting every event leaves no
// garbage (a Go guest's garbage collections were most of such a filter's
// cost). Do not keep it past the handler.
func (e *Event) With(attr, value string) ([]byte, error) {
	if start, end, ok := member(e.json, attr); ok {
		out := outBuffer(len(e.json) - (end - start) + len(value) + 2)
		out = append(out, e.json[:start]...)
		out = appendQuote(out, value)
		return withOutput(append(out, e.json[end:]...)), nil
	}
	i := skipWS(e.json, 0)
	if i >= len(e.json) || e.json[i] != '{' {
		return nil, errors.New("event is not a JSON object")
	}
	out := outBuffer(len(e.json) + len(attr) + len(value) + 6)
	out = append(out, e.json[:i+1]...)
	out = appendQuote(out, attr)
	out = append(out, ':')
	out = appendQuote(out, value)
	if j := skipWS(e.json, i+1); j < len(e.json) && e.json[j] != '}' {
		out = append(out, ',')
	}
	return withOutput(append(out, e.json[i+1:]...)), nil
}

var (
	// lastWith is the latest output of With during the current call.
	lastWith []byte
	// spare is a With output the router has copied: the next With builds
	// in it.
	spare []byte
)

// outBuffer returns an empty buffer of capacity n or more: the spare one
// (at most once), else a new one.
func outBuffer(n int) []byte {
	b := spare
	spare = nil
	if cap(b) < n {
		return make([]byte, 0, n)
	}
	return b[:0]
}

func withOutput(out []byte) []byte {
	lastWith = out
	return out
}

// recycle makes out, a replacement the router has just copied, the spare
// buffer if With built it in this call; a buffer of the handler's own is
// never reused.
func recycle(out []byte) {
	if len(out) > 0 && len(lastWith) > 0 && &out[0] == &lastWith[0] {
		spare = out
	}
	lastWith = nil
}

// member finds key in the JSON object obj and returns the bounds of its
// value.
func member(obj []byte, key string) (start, end int, ok bool) {
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return 0, 0, false
	}
	i++
	for {
		i = skipWS(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return 0, 0, false
		}
		ks := i
		i = skipString(obj, i)
		if i < 0 {
			return 0, 0, false
		}
		k := obj[ks:i]
		i = skipWS(obj, i)
		if i >= len(obj) || obj[i] != ':' {
			return 0, 0, false
		}
		i = skipWS(obj, i+1)
		vs := i
		i = skipValue(obj, i)
		if i < 0 {
			return 0, 0, false
		}
		if keyEquals(k, key) {
			return vs, i, true
		}
		i = skipWS(obj, i)
		if i >= len(obj) || obj[i] != ',' {
			return 0, 0, false
		}
		i++
	}
}

func keyEquals(quoted []byte, key string) bool {
	if len(quoted) == len(key)+2 && string(quoted[1:len(quoted)-1]) == key {
		return true
	}
	for _, c := range quoted {
		if c == '\\' {
			s, ok := unquote(quoted)
			return ok && s == key
		}
	}
	return false
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i], or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				i--
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' && b[i] != '\r' && b[i] != '\t' {
		i++
	}
	return i
}

// unquote decodes a JSON string literal.
func unquote(q []byte) (string, bool) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", false
	}
	q = q[1 : len(q)-1]
	simple := true
	for _, c := range q {
		if c == '\\' {
			simple = false
			break
		}
	}
	if simple {
		return string(q), true
	}
	out := make([]byte, 0, len(q))
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(q) {
			return "", false
		}
		switch q[i] {
		case '"', '\\', '/':
			out = append(out, q[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(q) {
				return "", false
			}
			r, err := strconv.ParseUint(string(q[i+1:i+5]), 16, 16)
			if err != nil {
				return "", false
			}
			i += 4
			ru := rune(r)
			if utf16.IsSurrogate(ru) && i+6 < len(q) && q[i+1] == '\\' && q[i+2] == 'u' {
				if r2, err := strconv.ParseUint(string(q[i+3:i+7]), 16, 16); err == nil {
					ru = utf16.DecodeRune(ru, rune(r2))
					i += 6
				}
			}
			out = utf8.AppendRune(out, ru)
		default:
			return "", false
		}
	}
	return string(out), true
}

// appendQuote appends s as a JSON string literal.
func appendQuote(out []byte, s string) []byte {
	const hex = "0123456789abcdef"
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c < 0x20:
			out = append(out, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			out = append(out, c)
		}
	}
	return append(out, '"')
}
