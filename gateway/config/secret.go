package config

import "log/slog"

// Secret holds a credential. Every way Go has of printing it (fmt's %v, %s,
// %#v, log/slog, encoding/json) prints REDACTED; only Reveal returns it, at
// the one place that hands it to a client.
type Secret string

const redacted = "REDACTED"

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// String returns REDACTED.
func (s Secret) String() string { return redacted }

// GoString returns REDACTED.
func (s Secret) GoString() string { return redacted }

// LogValue returns REDACTED.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON returns "REDACTED".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns REDACTED, for encoders that prefer text.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
