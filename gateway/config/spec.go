package config

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Spec declares one entry kind, (Type, Provider), in one place: its
// address, its auth methods, every option with its parser, default and
// doc, its cross-field checks and, for streams and processors, how it is
// built. The loader walks the specs, so that decoding, defaults, the
// README's table and `check` all follow from this one declaration.
type Spec struct {
	Type, Provider string
	Doc            string // one line: what the entry is

	Address AddressRule
	// Auth lists the accepted auth.method values; with a "none" method the
	// entry may leave auth out.
	Auth    []AuthMethod
	Options []Option

	// New returns the kind's typed settings (a pointer) with the entry's
	// name and checked address; options and the auth secret are set into
	// it next.
	New func(e Entry) any
	// Check, when set, runs cross-field checks once every option is read.
	Check func(settings any, c *Checker)

	// BuildStream builds a stream entry (type "stream").
	BuildStream func(settings any, env Env) (Source, error)
	// BuildProcessor builds a processor entry (type "processor"): the
	// processor and the dispatcher settings it decides (StatsName,
	// Concurrency, QueueSize, RetryLimit); the daemon fills in the rest.
	BuildProcessor func(ctx context.Context, settings any, env Env) (gateway.DispatcherOptions, error)
}

// Entry is what every entry has, handed to Spec.New.
type Entry struct {
	Index   int    // in the file
	Name    string // its "name", by default its provider name
	Address string // checked (and normalised) by the kind's AddressRule
}

// Env is what a build function gets from the daemon.
type Env struct {
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Out     io.Writer // the daemon's standard output
}

// Source is a built stream: the daemon runs it and closes it at shutdown.
type Source interface {
	gateway.Stream
	io.Closer
}

// Checker is what a Spec.Check reports problems to.
type Checker struct {
	Offline bool // files named by the configuration are not on this machine
	e       *entryCtx
}

// Problem reports a problem with field ("options.KEY", "address").
func (c *Checker) Problem(field, format string, args ...any) { c.e.problem(field, format, args...) }

// AddressRule is what an entry's "address" must be.
type AddressRule struct {
	// Hint says what the address is, in "required field is missing
	// (HINT)"; empty: the kind takes no address and refuses one.
	Hint string
	// Ignored: the kind accepts an address and does nothing with it (the
	// spec's vcsim entry).
	Ignored bool
	// Check checks the address and returns it normalised; nil accepts any.
	// Its error is the problem's message; errors.Join reports several.
	Check func(addr string, offline bool) (string, error)
}

// URLAddress is an http(s) URL address; path, when set, is the path the
// message shows ("/sdk").
func URLAddress(hint, path string) AddressRule {
	return AddressRule{Hint: hint, Check: func(s string, _ bool) (string, error) { return s, CheckURL(s, path) }}
}

// AuthMethod is one accepted auth.method: the keys its secret must have
// (every one required) and where they go in the settings.
type AuthMethod struct {
	Name string
	Keys []string
	// ExactlyOne: the secret has exactly one of Keys, not all of them.
	ExactlyOne bool
	set        func(settings any, secret map[string]string)
}

// NoAuth is auth.method "none"; with it the entry may leave auth out.
var NoAuth = AuthMethod{Name: "none"}

// Auth declares an auth method whose secret has keys; set records them in
// the settings S.
func Auth[S any](name string, set func(s *S, secret map[string]string), keys ...string) AuthMethod {
	return AuthMethod{Name: name, Keys: keys, set: func(st any, secret map[string]string) { set(st.(*S), secret) }}
}

// AuthOneOf declares an auth method whose secret has exactly one of keys
// (a token, or the file holding it); set records it in the settings S.
func AuthOneOf[S any](name string, set func(s *S, secret map[string]string), keys ...string) AuthMethod {
	m := Auth(name, set, keys...)
	m.ExactlyOne = true
	return m
}

// Option is one key of an entry's "options".
type Option struct {
	Key     string
	Default string // used when the option is absent; "" means none
	Doc     string // one line
	// set parses value (the default when the option is absent) into the
	// settings; its error is the problem's message (errors.Join: several).
	set func(settings any, value string, offline bool) error
}

// Parsed is an option read with parse into the field of the settings S that
// field returns; parse's error is the message ("must be ..., got %q").
func Parsed[S, T any](key, def, doc string, parse func(string) (T, error), field func(*S) *T) Option {
	return Option{Key: key, Default: def, Doc: doc, set: func(st any, v string, _ bool) error {
		x, err := parse(v)
		*field(st.(*S)) = x
		return err
	}}
}

// String is an option taken as it is.
func String[S any](key, def, doc string, field func(*S) *string) Option {
	return Parsed(key, def, doc, func(s string) (string, error) { return s, nil }, field)
}

// Bool is "true" or "false".
func Bool[S any](key, def, doc string, field func(*S) *bool) Option {
	return Parsed(key, def, doc, parseBool, field)
}

// Duration is a Go duration greater than zero.
func Duration[S any](key, def, doc string, field func(*S) *time.Duration) Option {
	return Parsed(key, def, doc, parseDuration, field)
}

// Int is a whole number from min to max.
func Int[S any](key, def, doc string, min, max int, field func(*S) *int) Option {
	return Parsed(key, def, doc, func(s string) (int, error) { return parseInt(s, min, max) }, field)
}

// Size is a positive size: bytes, or a number with KiB, MiB or GiB.
func Size[S any](key, def, doc string, field func(*S) *int64) Option {
	return Parsed(key, def, doc, ParseSize, field)
}

// URL is an http(s) URL without credentials; empty when absent.
func URL[S any](key, doc string, field func(*S) *string) Option {
	return Parsed(key, "", doc, func(s string) (string, error) {
		if s == "" {
			return "", nil
		}
		return s, CheckURL(s, "")
	}, field)
}

// File is a file that must be readable (unless the check is offline);
// empty when absent.
func File[S any](key, doc string, field func(*S) *string) Option {
	return Option{Key: key, Doc: doc, set: func(st any, s string, offline bool) error {
		*field(st.(*S)) = s
		if s == "" {
			return nil
		}
		_, err := stat(s, offline, "read")
		return err
	}}
}

// CAFile is a PEM bundle of certificates to trust: it must be readable and
// hold one (unless the check is offline); empty when absent.
func CAFile[S any](key, doc string, field func(*S) *string) Option {
	return Option{Key: key, Doc: doc, set: func(st any, s string, offline bool) error {
		*field(st.(*S)) = s
		if s == "" || offline {
			return nil
		}
		pem, err := os.ReadFile(s)
		if err != nil {
			return fmt.Errorf("cannot read %q: %v", s, errors.Unwrap(err))
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate", s)
		}
		return nil
	}}
}

// OneOf is one of values.
func OneOf[S any, T ~string](key, def, doc string, field func(*S) *T, values ...T) Option {
	return Parsed(key, def, doc, func(s string) (T, error) {
		for _, v := range values {
			if string(v) == s {
				return v, nil
			}
		}
		q := make([]string, len(values))
		for i, v := range values {
			q[i] = strconv.Quote(string(v))
		}
		return "", fmt.Errorf("must be %s, got %q", orList(q), s)
	}, field)
}

// orList joins items as `a, b or c`.
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf(`must be "true" or "false", got %q`, s)
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf(`must be a duration such as "250ms" or "5m", got %q`, s)
	}
	if d <= 0 {
		return d, fmt.Errorf("must be greater than zero, got %q", s)
	}
	return d, nil
}

func parseInt(s string, min, max int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("must be a whole number, got %q", s)
	}
	if n < min {
		return n, fmt.Errorf("must be at least %d, got %q", min, s)
	}
	if n > max {
		return n, fmt.Errorf("must be at most %d, got %q", max, s)
	}
	return n, nil
}

// CheckURL checks an http(s) URL without credentials; path, when set, is the path the message
// shows ("/sdk").
func CheckURL(s, path string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		want := "an http:// or https:// URL"
		if path != "" {
			want = "an https://HOST[:PORT]" + path + " URL"
		}
		return fmt.Errorf("must be %s, got %q", want, s)
	}
	var errs []error
	if u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("has an invalid port in %q", s))
		}
	}
	if u.User != nil {
		// A URL with credentials would print them in logs and /stats.
		errs = append(errs, errors.New("must not carry credentials (user:password@); use auth.secret"))
	}
	return errors.Join(errs...)
}

// registry holds the kinds providers register (Register) and the built-in
// ones of this package, by (type, provider).
var registry = builtins()

// Register adds entry kinds to the loader; the providers package calls it
// once, at init, for every stream and processor kind. It panics on a
// programming error: a kind registered twice, or a spec without what its
// type needs.
func Register(specs ...*Spec) {
	for _, s := range specs {
		k := [2]string{s.Type, s.Provider}
		switch {
		case registry[k] != nil:
			panic("config: entry kind registered twice: " + s.Type + "/" + s.Provider)
		case s.New == nil:
			panic("config: entry kind without New: " + s.Type + "/" + s.Provider)
		case s.Type == TypeStream && s.BuildStream == nil, s.Type == TypeProcessor && s.BuildProcessor == nil:
			panic("config: entry kind without its build function: " + s.Type + "/" + s.Provider)
		case s.Type != TypeStream && s.Type != TypeProcessor:
			panic("config: only stream and processor kinds are registered, not " + s.Type + "/" + s.Provider)
		}
		registry[k] = s
	}
}

// Specs returns every registered entry kind, by type then provider.
func Specs() []*Spec {
	out := make([]*Spec, 0, len(registry))
	for _, s := range registry {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].Provider < out[j].Provider
	})
	return out
}

// OptionsOf returns every option an entry of the kind takes: its own, then
// those every entry of its type shares (a processor's pattern and streams).
func OptionsOf(s *Spec) []Option {
	if s.Type == TypeProcessor {
		return append(append([]Option(nil), s.Options...), processorOptions...)
	}
	return s.Options
}
