// Package cevent validates a CloudEvent a filter produced, fast.
//
// gateway.ParseReplacement decodes with the CloudEvents SDK and takes ~27µs
// and 66 allocations for a 1 KB event, which alone caps a rewriting filter
// at ~37,000 events/s. Parse checks the same contract in one pass over the
// bytes without building a tree: ~1-2µs. It is stricter than the SDK, never
// looser (FuzzParse checks that whatever Parse accepts, ParseReplacement
// accepts with the same id, source and subject), so a replacement it lets
// through decodes wherever the SDK decodes it.
package cevent

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// Parse validates data as a structured-mode JSON CloudEvent 1.0 that
// replaces orig and returns it as an event. Like gateway.ParseReplacement
// it keeps orig's Stream, Position and Entity. Unlike it, Parse does not
// copy data: the event's JSON is data itself, so the caller hands data
// over and must not change it afterwards (the host copies a filter's
// output out of guest memory once, into the event's own bytes). Beyond the
// SDK's checks it requires specversion "1.0", refuses duplicate
// attributes, null attribute values, an empty time, and both data and
// data_base64.
//
// It reads data once: UTF-8 is checked inside strings as they are
// scanned (everything outside strings must be ASCII JSON syntax anyway).
func Parse(data []byte, orig *gateway.Event) (*gateway.Event, error) {
	if len(data) > gateway.MaxEventSize {
		return nil, fmt.Errorf("replacement event is %d bytes, over the %d byte limit", len(data), gateway.MaxEventSize)
	}
	ev, err := parse(data, orig)
	if err != nil {
		return nil, fmt.Errorf("replacement event is not a valid CloudEvent: %w", err)
	}
	ev.Stream, ev.Time, ev.Key, ev.Entity = orig.Stream, orig.Time, orig.Key, orig.Entity
	ev.JSON = data
	return ev, nil
}

type scanner struct {
	b    []byte
	i    int
	orig *gateway.Event

	mediaType    string // of datacontenttype, "" without one
	dataIsString bool
}

// unsafeString views b as a string for checks that do not keep it.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

var errEnd = errors.New("unexpected end of JSON input")

func parse(data []byte, orig *gateway.Event) (*gateway.Event, error) {
	s := &scanner{b: data}
	s.ws()
	if !s.eat('{') {
		return nil, errors.New("not a JSON object")
	}
	var (
		ev                        gateway.Event
		haveSpec, haveID, haveSrc bool
		haveType, haveData        bool
		haveB64                   bool
		// The keys seen so far, as raw bytes: an event has a dozen
		// attributes, a linear search beats a map and allocates nothing.
		seenBuf [16][]byte
		seen    = seenBuf[:0]
	)
	s.orig = orig
	s.ws()
	if !s.eat('}') {
		for {
			s.ws()
			ks, ke, kesc, err := s.str()
			if err != nil {
				return nil, fmt.Errorf("attribute name: %w", err)
			}
			var key []byte
			if kesc {
				key = []byte(s.text(ks, ke, true))
			} else {
				key = s.b[ks:ke]
			}
			s.ws()
			if !s.eat(':') {
				return nil, fmt.Errorf("attribute %q: missing ':'", key)
			}
			s.ws()
			for _, k := range seen {
				if string(k) == string(key) {
					return nil, fmt.Errorf("attribute %q appears twice", key)
				}
			}
			seen = append(seen, key)
			if err := s.attribute(&ev, key, &haveSpec, &haveID, &haveSrc, &haveType, &haveData, &haveB64); err != nil {
				return nil, err
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				break
			}
			return nil, fmt.Errorf("after attribute %q: expected ',' or '}'", key)
		}
	}
	s.ws()
	if s.i != len(s.b) {
		return nil, fmt.Errorf("data after the event's closing brace at offset %d", s.i)
	}
	switch {
	case !haveSpec:
		return nil, errors.New("specversion: required attribute missing")
	case !haveID:
		return nil, errors.New("id: required attribute missing")
	case !haveSrc:
		return nil, errors.New("source: required attribute missing")
	case !haveType:
		return nil, errors.New("type: required attribute missing")
	case haveData && haveB64:
		return nil, errors.New("has both data and data_base64")
	case haveData && !s.dataIsString && !isJSONMediaType(s.mediaType):
		return nil, fmt.Errorf("data: must be a JSON string for datacontenttype %q", s.mediaType)
	}
	return &ev, nil
}

func (s *scanner) attribute(ev *gateway.Event, key []byte, haveSpec, haveID, haveSrc, haveType, haveData, haveB64 *bool) error {
	if string(key) == "data" {
		*haveData = true
		s.dataIsString = s.peek() == '"'
		return s.value(0)
	}
	if string(key) != "data_base64" && !validExtensionName(key) {
		return fmt.Errorf("attribute %q: names must be lower-case ASCII letters and digits", key)
	}
	switch string(key) {
	case "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data_base64":
	default:
		// An extension: a string, a boolean or an integer in int32 range.
		switch c := s.peek(); {
		case c == '"':
			_, _, _, err := s.str()
			return wrap(key, err)
		case c == 't' || c == 'f':
			if s.lit("true") || s.lit("false") {
				return nil
			}
		case c == '-' || (c >= '0' && c <= '9'):
			start := s.i
			if err := s.number(); err != nil {
				return wrap(key, err)
			}
			if !isInt32(s.b[start:s.i]) {
				return fmt.Errorf("extension %q: numbers must be integers in the int32 range", key)
			}
			return nil
		}
		return fmt.Errorf("extension %q: must be a string, a boolean or an integer", key)
	}
	if s.peek() != '"' {
		return fmt.Errorf("attribute %q: must be a string", key)
	}
	start, end, esc, err := s.str()
	if err != nil {
		return wrap(key, err)
	}
	raw := s.b[start:end]
	var v string
	switch string(key) {
	case "id", "source", "subject":
		// Kept in the event: a string of its own.
		v = s.text(start, end, esc)
	default:
		if esc {
			v = s.text(start, end, esc)
		} else {
			v = unsafeString(raw)
		}
	}
	switch string(key) {
	case "specversion":
		if v != "1.0" {
			return fmt.Errorf("specversion: must be \"1.0\", got %q", v)
		}
		*haveSpec = true
	case "id":
		if strings.TrimSpace(v) == "" {
			return errors.New("id: must be a non-empty string")
		}
		ev.ID, *haveID = v, true
	case "source":
		if strings.TrimSpace(v) == "" {
			return errors.New("source: must be a non-empty URI-reference")
		}
		if s.orig == nil || v != s.orig.Source { // the original's source is valid
			u, err := url.Parse(v)
			if err != nil {
				return fmt.Errorf("source: %w", err)
			}
			// The SDK keeps the source as a URL and gives it back
			// normalised ("a b" -> "a%20b"): so does Parse.
			v = u.String()
		}
		ev.Source, *haveSrc = v, true
	case "type":
		if strings.TrimSpace(v) == "" {
			return errors.New("type: must be a non-empty string")
		}
		*haveType = true
	case "subject":
		if strings.TrimSpace(v) == "" {
			return errors.New("subject: if present, must be a non-empty string")
		}
		ev.Subject = v
	case "time":
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			return fmt.Errorf("time: not an RFC 3339 timestamp: %q", v)
		}
	case "datacontenttype":
		s.mediaType = "application/json"
		if v != "application/json" {
			if strings.TrimSpace(v) == "" {
				return errors.New("datacontenttype: if present, must be a media type")
			}
			mt, _, err := mime.ParseMediaType(v)
			if err != nil {
				return fmt.Errorf("datacontenttype: %w", err)
			}
			s.mediaType = mt
		}
	case "dataschema":
		u, err := url.Parse(v)
		if err != nil || !u.IsAbs() {
			return fmt.Errorf("dataschema: must be an absolute URI, got %q", v)
		}
	case "data_base64":
		if _, err := base64.StdEncoding.DecodeString(v); err != nil {
			return fmt.Errorf("data_base64: %w", err)
		}
		*haveB64 = true
	}
	return nil
}

// isJSONMediaType reports whether data of media type mt is JSON in a
// structured event (the SDK's rule; no datacontenttype means JSON).
func isJSONMediaType(mt string) bool {
	switch mt {
	case "", "application/json", "text/json", "application/cloudevents+json", "application/cloudevents-batch+json":
		return true
	}
	return false
}

func wrap(key []byte, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("attribute %q: %w", key, err)
}

func validExtensionName(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		// The CloudEvents spec allows lower-case letters and digits; the
		// SDK also takes upper case, but then refuses "dataContentType"
		// as an overwrite of a spec attribute.
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// isInt32 reports whether the JSON number n is an integer in int32 range,
// written without fraction or exponent.
func isInt32(n []byte) bool {
	neg := n[0] == '-'
	if neg {
		n = n[1:]
	}
	if len(n) == 0 || len(n) > 10 {
		return false
	}
	var v int64
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v >= -1<<31 && v <= 1<<31-1
}

// text returns the string between start and end, unescaped.
func (s *scanner) text(start, end int, escaped bool) string {
	if !escaped {
		return string(s.b[start:end])
	}
	var v string
	// The string was validated by str: Unmarshal cannot fail.
	_ = json.Unmarshal(s.b[start-1:end+1], &v)
	return v
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) lit(l string) bool {
	if len(s.b)-s.i >= len(l) && string(s.b[s.i:s.i+len(l)]) == l {
		s.i += len(l)
		return true
	}
	return false
}

// plain marks the bytes a JSON string holds as they are: ASCII; a
// multi-byte UTF-8 sequence is decoded (and so validated) on its own.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string and returns the bounds of its content.
func (s *scanner) str() (start, end int, escaped bool, err error) {
	if !s.eat('"') {
		return 0, 0, false, fmt.Errorf("expected a string at offset %d", s.i)
	}
	b, i := s.b, s.i
	start = i
	for {
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			s.i = i
			return 0, 0, false, errEnd
		}
		switch b[i] {
		case '"':
			s.i = i + 1
			return start, i, escaped, nil
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				s.i = i
				return 0, 0, false, errEnd
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					s.i = i
					return 0, 0, false, errEnd
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return 0, 0, false, fmt.Errorf("invalid \\u escape at offset %d", i)
					}
				}
				i += 6
			default:
				return 0, 0, false, fmt.Errorf("invalid escape at offset %d", i)
			}
		default:
			if b[i] >= utf8.RuneSelf {
				r, size := utf8.DecodeRune(b[i:])
				if r == utf8.RuneError && size == 1 {
					return 0, 0, false, fmt.Errorf("not valid UTF-8 at offset %d", i)
				}
				i += size
				continue
			}
			return 0, 0, false, fmt.Errorf("control character in string at offset %d", i)
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (s *scanner) number() error {
	start := s.i
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return fmt.Errorf("invalid number at offset %d", start)
	}
	if s.eat('.') {
		if s.digits() == 0 {
			return fmt.Errorf("invalid number at offset %d", start)
		}
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return fmt.Errorf("invalid number at offset %d", start)
		}
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

// value validates any JSON value.
func (s *scanner) value(depth int) error {
	if depth > maxDepth {
		return errors.New("nested too deeply")
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, _, err := s.str()
		return err
	case c == '{':
		s.i++
		s.ws()
		if s.eat('}') {
			return nil
		}
		for {
			s.ws()
			if _, _, _, err := s.str(); err != nil {
				return err
			}
			s.ws()
			if !s.eat(':') {
				return fmt.Errorf("expected ':' at offset %d", s.i)
			}
			s.ws()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				return nil
			}
			return fmt.Errorf("expected ',' or '}' at offset %d", s.i)
		}
	case c == '[':
		s.i++
		s.ws()
		if s.eat(']') {
			return nil
		}
		for {
			s.ws()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat(']') {
				return nil
			}
			return fmt.Errorf("expected ',' or ']' at offset %d", s.i)
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case s.lit("true"), s.lit("false"), s.lit("null"):
		return nil
	case c == 0 && s.i >= len(s.b):
		return errEnd
	}
	return fmt.Errorf("invalid character %q at offset %d", s.peek(), s.i)
}
