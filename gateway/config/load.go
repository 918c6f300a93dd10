package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/vmware-samples/vmware-event-router/gateway/pattern"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File     string
	Index    int    // entry index; -1 for the file as a whole
	Type     string // the entry's type, when known
	Provider string // the entry's provider, when known
	Field    string // path inside the entry ("auth.method", "options.timeout")
	Msg      string
}

func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	b.WriteString(": ")
	if p.Index >= 0 {
		fmt.Fprintf(&b, "entry [%d]", p.Index)
		if p.Type != "" || p.Provider != "" {
			fmt.Fprintf(&b, " (%s/%s)", p.Type, p.Provider)
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one file. Its message lists them one a
// line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a configuration file's content; name is used
// in messages. It never panics.
func Parse(name string, data []byte) (cfg *Config, err error) {
	return parse(name, data, false)
}

// ParseOffline is Parse without the checks that files and directories named
// by the configuration exist (filter and state addresses, ca_file,
// tls_*_file): it validates a file meant for another machine, such as a
// pod's, where those paths are mounted.
func ParseOffline(name string, data []byte) (*Config, error) {
	return parse(name, data, true)
}

func parse(name string, data []byte, offline bool) (cfg *Config, err error) {
	defer func() {
		// Parse is a parser of untrusted input: nothing in it should panic,
		// and if a dependency ever does, the user still gets a message.
		if r := recover(); r != nil {
			cfg, err = nil, Problems{{File: name, Index: -1, Msg: fmt.Sprintf("internal error while reading the file: %v", r)}}
		}
	}()
	entries, dups, perr := decode(name, data)
	if perr != nil {
		return nil, perr
	}
	v := validator{file: name, cfg: &Config{File: name}, offline: offline, dups: dups}
	v.entries(entries)
	if len(v.problems) > 0 {
		// Maps have no order; problems do, so messages are stable: by
		// entry, then field, with file-level problems last.
		sort.SliceStable(v.problems, func(i, j int) bool {
			a, b := v.problems[i], v.problems[j]
			ai, bi := uint(a.Index), uint(b.Index) // -1 sorts last
			if ai != bi {
				return ai < bi
			}
			return a.Field < b.Field
		})
		return nil, v.problems
	}
	return v.cfg, nil
}

// isYAML reports whether the file named name holds YAML (by its extension);
// any other name is JSON.
func isYAML(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// caseDup is two keys of one object that differ only in case.
type caseDup struct {
	field string // the object's path inside the entry; "" for the entry itself
	a, b  string
}

// decode checks the file is an array of objects and has viper read it with
// the codec of its format. A syntax check goes first because it reports
// where an error is, and it sees the keys as written: viper matches keys
// case-insensitively by lowercasing them, which would silently merge two
// keys that differ only in case, so those are found here (dups, by entry).
// Viper cannot read a top-level array, so it reads the array wrapped in an
// object.
func decode(name string, data []byte) (entries []any, dups map[int][]caseDup, err error) {
	fileProblem := func(format string, args ...any) error {
		return Problems{{File: name, Index: -1, Msg: fmt.Sprintf(format, args...)}}
	}
	format, what := "json", "a JSON array of entries, [{...}, {...}]"
	if isYAML(name) {
		format, what = "yaml", "a YAML sequence of entries (- type: ...)"
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil, fileProblem("the file is empty: it must be %s", what)
	}
	var wrapped []byte
	if format == "yaml" {
		// The probes read data as it is, so that line numbers are the file's.
		if dups, err = yamlProbe(data, fileProblem); err != nil {
			return nil, nil, err
		}
		wrapped = wrapYAML(data)
	} else {
		if dups, err = jsonProbe(data, fileProblem); err != nil {
			return nil, nil, err
		}
		wrapped = make([]byte, 0, len(trimmed)+16)
		wrapped = append(wrapped, `{"entries":`...)
		wrapped = append(wrapped, trimmed...)
		wrapped = append(wrapped, '}')
	}
	v := viper.New()
	v.SetConfigType(format)
	if err := v.ReadConfig(bytes.NewReader(wrapped)); err != nil {
		return nil, nil, fileProblem("reading the file: %v", err)
	}
	entries, ok := v.Get("entries").([]any)
	if !ok {
		return nil, nil, fileProblem("the file must be %s", what)
	}
	if len(entries) == 0 {
		return nil, nil, fileProblem("the array has no entries: stream, processor and metrics entries are required")
	}
	return entries, dups, nil
}

// jsonProbe checks the JSON syntax and that the file is an array, and finds
// keys that differ only in case.
func jsonProbe(data []byte, fileProblem func(string, ...any) error) (map[int][]caseDup, error) {
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			line, col := lineCol(data, syn.Offset)
			return nil, fileProblem("invalid JSON at line %d, column %d: %v", line, col, err)
		}
		if err.Error() == "unexpected end of JSON input" {
			return nil, fileProblem("invalid JSON: the file ends early (truncated?)")
		}
		return nil, fileProblem("invalid JSON: %v", err)
	}
	arr, ok := probe.([]any)
	if !ok {
		return nil, fileProblem("the file must be a JSON array of entries, [{...}, {...}], got %s", jsonKind(probe))
	}
	dups := map[int][]caseDup{}
	var walk func(i int, field string, n any)
	walk = func(i int, field string, n any) {
		m, ok := n.(map[string]any)
		if !ok {
			return
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		dups[i] = append(dups[i], caseDups(field, keys)...)
		for _, k := range keys {
			walk(i, joinField(field, strings.ToLower(k)), m[k])
		}
	}
	for i, e := range arr {
		walk(i, "", e)
	}
	return dups, nil
}

// yamlProbe checks the YAML syntax and that the file is a sequence, and
// finds keys that differ only in case.
func yamlProbe(data []byte, fileProblem func(string, ...any) error) (map[int][]caseDup, error) {
	var doc, more yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fileProblem("invalid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fileProblem("the file must hold one YAML document (a second starts after a \"---\" line)")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, fileProblem("the file is empty: it must be a YAML sequence of entries (- type: ...)")
	}
	top := doc.Content[0]
	if top.Kind != yaml.SequenceNode {
		kind := "a single value"
		if top.Kind == yaml.MappingNode {
			kind = "a mapping (put the entries in a sequence: - type: ...)"
		}
		return nil, fileProblem("the file must be a YAML sequence of entries (- type: ...), got %s", kind)
	}
	dups := map[int][]caseDup{}
	var walk func(i int, field string, n *yaml.Node)
	walk = func(i int, field string, n *yaml.Node) {
		if n.Kind != yaml.MappingNode {
			return // aliases are not followed: their target is walked where it is defined
		}
		var keys []string
		for j := 0; j+1 < len(n.Content); j += 2 {
			keys = append(keys, n.Content[j].Value)
		}
		dups[i] = append(dups[i], caseDups(field, keys)...)
		for j := 0; j+1 < len(n.Content); j += 2 {
			walk(i, joinField(field, strings.ToLower(n.Content[j].Value)), n.Content[j+1])
		}
	}
	for i, e := range top.Content {
		walk(i, "", e)
	}
	return dups, nil
}

// wrapYAML indents the file under an "entries" key, which keeps its
// structure: YAML nesting is relative indentation.
func wrapYAML(data []byte) []byte {
	lines := strings.Split(string(data), "\n")
	var b strings.Builder
	b.Grow(len(data) + 2*len(lines) + 16)
	b.WriteString("entries:\n")
	for _, l := range lines {
		if t := strings.TrimRight(l, " \t\r"); t == "---" || t == "..." {
			// Document markers of the one document yamlProbe allowed:
			// indented they would be content.
			continue
		}
		b.WriteString("  ")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// caseDups returns the pairs of keys that differ only in case, in order.
func caseDups(field string, keys []string) []caseDup {
	sort.Strings(keys)
	var out []caseDup
	seen := map[string]string{}
	for _, k := range keys {
		l := strings.ToLower(k)
		if first, ok := seen[l]; ok {
			out = append(out, caseDup{field: field, a: first, b: k})
			continue
		}
		seen[l] = k
	}
	return out
}

func joinField(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func lineCol(data []byte, offset int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < offset-1 && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object (put the entries in an array: [{...}, {...}])"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64, int, int64, uint64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

type validator struct {
	dups     map[int][]caseDup
	offline  bool // skip checks of the local file system
	file     string
	cfg      *Config
	problems Problems

	procStreams []procStreams
}

// entryCtx carries one entry being validated.
type entryCtx struct {
	v        *validator
	index    int
	typ      string
	provider string
	raw      map[string]any
	name     string // the entry's name; default its provider
	address  string
	method   string
	secret   map[string]string
	options  map[string]string
	used     map[string]bool   // options read by the schema
	defaults map[string]string // when set, every option read with its default: see kindOptions
}

func (e *entryCtx) problem(field, format string, args ...any) {
	e.v.problems = append(e.v.problems, Problem{
		File: e.v.file, Index: e.index, Type: e.typ, Provider: e.provider,
		Field: field, Msg: fmt.Sprintf(format, args...),
	})
}

func (v *validator) fileProblem(format string, args ...any) {
	v.problems = append(v.problems, Problem{File: v.file, Index: -1, Msg: fmt.Sprintf(format, args...)})
}

// kinds is the closed registry of entries: (type, provider) to the function
// that validates and records one.
var kinds = map[[2]string]func(*entryCtx){
	{TypeStream, ProviderVCenter}:        vcenterEntry,
	{TypeStream, ProviderVCSim}:          vcsimEntry,
	{TypeProcessor, ProviderOpenFaaS}:    openfaasEntry,
	{TypeProcessor, ProviderEventBridge}: eventbridgeEntry,
	{TypeProcessor, ProviderCloudEvents}: cloudeventsEntry,
	{TypeProcessor, ProviderStdout}:      stdoutEntry,
	{TypeFilter, ProviderWasm}:           wasmEntry,
	{TypeMetrics, ProviderInternal}:      metricsEntry,
	{TypeInternal, ProviderMetrics}:      metricsEntry,
	{TypeInternal, ProviderState}:        stateEntry,
}

func knownKinds() string {
	var names []string
	for k := range kinds {
		names = append(names, k[0]+"/"+k[1])
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (v *validator) entries(entries []any) {
	var streams, processors, metrics, states []string
	type namedEntry struct{ typ, where string }
	named := map[string]namedEntry{} // stream and processor names to the entry that took it
	for i, raw := range entries {
		e := &entryCtx{v: v, index: i}
		m, ok := raw.(map[string]any)
		if !ok {
			e.problem("", "must be an object {type, provider, address, auth, options}, got %s", jsonKind(raw))
			continue
		}
		e.raw = m
		e.typ = e.str("type", true)
		e.provider = e.str("provider", true)
		e.address = e.str("address", false)
		for _, d := range v.dups[i] {
			e.problem(d.field, "keys %q and %q differ only in case: keys match case-insensitively, keep one", d.a, d.b)
		}
		for k := range m {
			switch k {
			case "type", "provider", "name", "address", "auth", "options":
			default:
				e.problem(k, "unknown field (allowed: type, provider, name, address, auth, options)")
			}
		}
		e.readAuth()
		e.readOptions()
		if e.typ == "" || e.provider == "" {
			continue
		}
		check, ok := kinds[[2]string{e.typ, e.provider}]
		if !ok {
			e.problem("", "unknown entry kind %s/%s (known: %s)", e.typ, e.provider, knownKinds())
			continue
		}
		e.name = e.entryName()
		where := fmt.Sprintf("entry [%d] (%s/%s)", i, e.typ, e.provider)
		switch {
		case e.typ == TypeStream:
			streams = append(streams, where)
		case e.typ == TypeProcessor:
			processors = append(processors, where)
		case e.provider == ProviderState:
			states = append(states, where)
		case e.typ == TypeMetrics || e.provider == ProviderMetrics:
			metrics = append(metrics, where)
		}
		if e.typ == TypeStream || e.typ == TypeProcessor {
			if other, taken := named[e.name]; taken {
				e.problem("name", "%q is also the name of %s: stream and processor names must be unique (set name on one of them)", e.name, other.where)
			} else {
				named[e.name] = namedEntry{e.typ, where}
			}
		}
		readEntry(e, check)
		for k := range e.options {
			if !e.used[k] {
				e.problem("options."+k, "unknown option for %s/%s%s", e.typ, e.provider, e.knownOptions())
			}
		}
	}
	if len(streams) == 0 {
		v.fileProblem(`no stream entry: at least one is required, e.g. {"type": "stream", "provider": "vmware_vcenter", ...}`)
	}
	if len(processors) == 0 {
		v.fileProblem(`no processor entry: at least one is required, e.g. {"type": "processor", "provider": "openfaas", ...}`)
	}
	switch {
	case len(metrics) == 0:
		v.fileProblem(`no metrics entry: exactly one is required, e.g. {"type": "metrics", "provider": "internal", "address": "0.0.0.0:8080", "auth": {"method": "none"}}`)
	case len(metrics) > 1:
		v.fileProblem("%d metrics entries (%s): exactly one is allowed", len(metrics), strings.Join(metrics, ", "))
	}
	// A processor's "streams" names stream entries, wherever they are in
	// the file.
	for _, ps := range v.procStreams {
		for _, name := range ps.names {
			if !slices.ContainsFunc(v.cfg.Streams, func(s Stream) bool { return s.Name == name }) {
				ps.e.problem("options.streams", "%q is not the name of a stream entry", name)
			}
		}
	}
	if len(states) > 1 {
		v.fileProblem("%d internal/state entries (%s): at most one is allowed", len(states), strings.Join(states, ", "))
	}
}

// readEntry reads the options of e's kind, check's and those every entry of
// its type shares.
func readEntry(e *entryCtx, check func(*entryCtx)) {
	cfg := e.v.cfg
	switch e.typ {
	case TypeStream:
		// The kind's function sets cfg's first-entry field; it is moved
		// into the entry and the first entry's put back.
		vc, sim := cfg.VCenter, cfg.VCSim
		cfg.VCenter, cfg.VCSim = nil, nil
		check(e)
		if cfg.VCenter != nil {
			cfg.VCenter.Name = e.name
		}
		if cfg.VCSim != nil {
			cfg.VCSim.Name = e.name
		}
		cfg.Streams = append(cfg.Streams, Stream{Name: e.name, VCenter: cfg.VCenter, VCSim: cfg.VCSim})
		if len(cfg.Streams) > 1 {
			cfg.VCenter, cfg.VCSim = vc, sim
		}
	case TypeProcessor:
		of, eb, ce, so := cfg.OpenFaaS, cfg.EventBridge, cfg.CloudEvents, cfg.Stdout
		cfg.OpenFaaS, cfg.EventBridge, cfg.CloudEvents, cfg.Stdout = nil, nil, nil, nil
		check(e)
		p := Processor{Name: e.name, OpenFaaS: cfg.OpenFaaS, EventBridge: cfg.EventBridge, CloudEvents: cfg.CloudEvents, Stdout: cfg.Stdout}
		if raw := e.option("pattern", ""); raw != "" {
			pat, err := pattern.Compile(raw)
			if err != nil {
				e.problem("options.pattern", "%v", err)
			}
			p.Pattern = pat
		}
		if raw := e.option("streams", ""); raw != "" {
			for _, name := range strings.Split(raw, ",") {
				name = strings.TrimSpace(name)
				switch {
				case name == "":
					e.problem("options.streams", "an empty stream name in %q (comma-separated stream entry names)", raw)
				case slices.Contains(p.Streams, name):
					e.problem("options.streams", "%q is named twice", name)
				default:
					p.Streams = append(p.Streams, name)
				}
			}
			if len(p.Streams) > 0 {
				e.v.procStreams = append(e.v.procStreams, procStreams{e, p.Streams})
			}
		}
		cfg.Processors = append(cfg.Processors, p)
		if len(cfg.Processors) == 1 {
			cfg.Pattern = p.Pattern
		} else {
			cfg.OpenFaaS, cfg.EventBridge, cfg.CloudEvents, cfg.Stdout = of, eb, ce, so
		}
	default:
		check(e)
	}
}

// procStreams is a processor entry's "streams" option, checked once every
// stream entry is read.
type procStreams struct {
	e     *entryCtx
	names []string
}

// kindOptions returns, per entry kind, every option it takes with its
// default ("" for none), read from the loader itself: an empty entry of
// each kind is validated and the options it asks for are recorded. So the
// documentation's tables are checked against the code that applies the
// defaults, not against a second list.
func kindOptions() map[[2]string]map[string]string {
	out := map[[2]string]map[string]string{}
	for k, check := range kinds {
		e := &entryCtx{
			v:   &validator{offline: true, cfg: &Config{}},
			typ: k[0], provider: k[1], name: k[1], raw: map[string]any{},
			options: map[string]string{}, used: map[string]bool{}, defaults: map[string]string{},
		}
		readEntry(e, check)
		out[k] = e.defaults
	}
	return out
}

// namePattern is an entry name: a DNS label's characters plus "_", so a
// name can be a metric label value, a file name and a Kubernetes name.
var namePattern = regexp.MustCompile(`^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`)

// entryName reads the entry's name; its default is the provider name.
func (e *entryCtx) entryName() string {
	name := e.str("name", false)
	if name == "" {
		if _, set := e.raw["name"]; set {
			e.problem("name", "must not be empty (leave it out for the default, %q)", e.provider)
		}
		return e.provider
	}
	switch {
	case len(name) > 63:
		e.problem("name", "must be at most 63 characters, got %d", len(name))
	case !namePattern.MatchString(name):
		e.problem("name", "must be lowercase letters, digits, '-' and '_', starting and ending with a letter or digit, got %q", name)
	}
	return name
}

// str reads a top-level string field of the entry.
func (e *entryCtx) str(key string, required bool) string {
	raw, ok := e.raw[key]
	if !ok || raw == nil {
		if required {
			e.problem(key, "required field is missing")
		}
		return ""
	}
	s, ok := raw.(string)
	if !ok {
		e.problem(key, "must be a string, got %s", jsonKind(raw))
		return ""
	}
	if required && strings.TrimSpace(s) == "" {
		e.problem(key, "must not be empty")
	}
	return s
}

func (e *entryCtx) readAuth() {
	raw, ok := e.raw["auth"]
	if !ok || raw == nil {
		return
	}
	m, ok := raw.(map[string]any)
	if !ok {
		e.problem("auth", "must be an object {method, secret}, got %s", jsonKind(raw))
		return
	}
	for k, val := range m {
		switch k {
		case "method":
			s, ok := val.(string)
			if !ok {
				e.problem("auth.method", "must be a string, got %s", jsonKind(val))
				continue
			}
			e.method = s
		case "secret":
			sm, ok := val.(map[string]any)
			if !ok {
				if val != nil {
					e.problem("auth.secret", "must be an object of strings, got %s", jsonKind(val))
				}
				continue
			}
			e.secret = map[string]string{}
			for sk, sv := range sm {
				s, ok := sv.(string)
				if !ok {
					// The value is never quoted: it may be a credential.
					e.problem("auth.secret."+sk, "must be a string, got %s", jsonKindNoValue(sv))
					continue
				}
				e.secret[sk] = s
			}
		default:
			e.problem("auth."+k, "unknown field (allowed: method, secret)")
		}
	}
}

func jsonKindNoValue(v any) string {
	if _, ok := v.(map[string]any); ok {
		return "an object"
	}
	return jsonKind(v)
}

func (e *entryCtx) readOptions() {
	e.options = map[string]string{}
	e.used = map[string]bool{}
	raw, ok := e.raw["options"]
	if !ok || raw == nil {
		return
	}
	m, ok := raw.(map[string]any)
	if !ok {
		e.problem("options", "must be an object of strings, got %s", jsonKind(raw))
		return
	}
	for k, val := range m {
		s, ok := val.(string)
		if !ok {
			hint := ""
			if b, isBool := val.(bool); isBool {
				hint = fmt.Sprintf(` (write "%t" with quotes: option values are strings)`, b)
			} else if f, isNum := val.(float64); isNum {
				hint = fmt.Sprintf(` (write "%s" with quotes: option values are strings)`, strconv.FormatFloat(f, 'f', -1, 64))
			} else if jsonKind(val) == "a number" {
				// YAML's whole numbers
				hint = fmt.Sprintf(` (write "%v" with quotes: option values are strings)`, val)
			} else if _, isObj := val.(map[string]any); isObj && k == "pattern" {
				hint = ` (the pattern is JSON in a string; in YAML, a block scalar: "pattern: |" and the JSON on the lines below)`
			}
			e.problem("options."+k, "must be a string, got %s%s", jsonKindNoValue(val), hint)
			e.used[k] = true
			continue
		}
		e.options[k] = s
	}
}

// knownOptions lists the options the entry's kind reads, for messages.
func (e *entryCtx) knownOptions() string {
	var known []string
	for k := range e.used {
		if _, set := e.options[k]; !set {
			known = append(known, k)
		}
	}
	for k := range e.options {
		if e.used[k] {
			known = append(known, k)
		}
	}
	if len(known) == 0 {
		return " (it takes no options)"
	}
	sort.Strings(known)
	return " (known: " + strings.Join(known, ", ") + ")"
}

// auth checks auth.method is one of methods and returns the secret's fields.
// An empty methods[0] means the entry may omit auth.
func (e *entryCtx) auth(methods []string, secretKeys map[string][]string) map[string]string {
	optional := methods[0] == ""
	method := e.method
	if method == "" {
		if !optional {
			e.problem("auth.method", "required field is missing (must be %s)", quoteList(methods))
		} else if len(e.secret) > 0 {
			e.problem("auth.method", "required with auth.secret (must be %s)", quoteList(methods))
		}
		return nil
	}
	if !contains(methods[boolIndex(optional):], method) {
		e.problem("auth.method", "must be %s, got %q", quoteList(methods), method)
		return nil
	}
	want := secretKeys[method]
	got := map[string]string{}
	for _, k := range want {
		s, present := e.secret[k]
		if !present || s == "" {
			e.problem("auth.secret."+k, "required for auth.method %q", method)
			continue
		}
		got[k] = s
	}
	for k := range e.secret {
		if !contains(want, k) {
			if len(want) == 0 {
				e.problem("auth.secret."+k, "unknown field: auth.method %q takes no secret", method)
			} else {
				e.problem("auth.secret."+k, "unknown field (allowed: %s)", strings.Join(want, ", "))
			}
		}
	}
	return got
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

func quoteList(items []string) string {
	var q []string
	for _, s := range items {
		if s != "" {
			q = append(q, strconv.Quote(s))
		}
	}
	return strings.Join(q, " or ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// option returns the option's value or its default, and marks it known.
func (e *entryCtx) option(key, def string) string {
	e.used[key] = true
	if e.defaults != nil {
		e.defaults[key] = def
	}
	if s, ok := e.options[key]; ok {
		return s
	}
	return def
}

func (e *entryCtx) boolOption(key, def string) bool {
	s := e.option(key, def)
	switch s {
	case "true":
		return true
	case "false":
		return false
	}
	e.problem("options."+key, `must be "true" or "false", got %q`, s)
	return false
}

func (e *entryCtx) durationOption(key, def string) time.Duration {
	s := e.option(key, def)
	d, err := time.ParseDuration(s)
	if err != nil {
		e.problem("options."+key, `must be a duration such as "250ms" or "5m", got %q`, s)
		return 0
	}
	if d <= 0 {
		e.problem("options."+key, "must be greater than zero, got %q", s)
	}
	return d
}

func (e *entryCtx) intOption(key, def string, min int) int {
	s := e.option(key, def)
	n, err := strconv.Atoi(s)
	if err != nil {
		e.problem("options."+key, "must be a whole number, got %q", s)
		return 0
	}
	if n < min {
		e.problem("options."+key, "must be at least %d, got %q", min, s)
	}
	return n
}

func (e *entryCtx) sizeOption(key, def string) int64 {
	s := e.option(key, def)
	n, err := ParseSize(s)
	if err != nil {
		e.problem("options."+key, "%v", err)
	}
	return n
}

// ParseSize reads a size: bytes, or a number with KiB, MiB or GiB.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if !strings.HasSuffix(s, u.suffix) {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), 10, 64)
		if err != nil || n <= 0 || n > (1<<50)/u.mult {
			break
		}
		return n * u.mult, nil
	}
	return 0, fmt.Errorf(`must be a positive size such as "16MiB", "512KiB" or "1048576", got %q`, s)
}

// urlField checks an http(s) URL; field is "address" or "options.KEY".
func (e *entryCtx) urlField(field, s string, path string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		want := "an http:// or https:// URL"
		if path != "" {
			want = "an https://HOST[:PORT]" + path + " URL"
		}
		e.problem(field, "must be %s, got %q", want, s)
		return s
	}
	if u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
			e.problem(field, "has an invalid port in %q", s)
		}
	}
	if u.User != nil {
		// A URL with credentials would print them in logs and /stats.
		e.problem(field, "must not carry credentials (user:password@); use auth.secret")
	}
	return s
}

func (e *entryCtx) noAddress() {
	if e.address != "" {
		e.problem("address", "not used by %s/%s: remove it", e.typ, e.provider)
	}
}

func (e *entryCtx) fileOption(key string) string {
	s := e.option(key, "")
	if s == "" {
		return ""
	}
	if e.v.offline {
		return s
	}
	if _, err := os.Stat(s); err != nil {
		e.problem("options."+key, "cannot read %q: %v", s, errors.Unwrap(err))
	}
	return s
}

func vcenterEntry(e *entryCtx) {
	c := &VCenter{}
	if e.address == "" {
		e.problem("address", "required field is missing (the vCenter SDK URL, e.g. https://vcenter.example.com/sdk)")
	} else {
		c.Address = e.urlField("address", e.address, "/sdk")
	}
	s := e.auth([]string{"user_password"}, map[string][]string{"user_password": {"username", "password"}})
	c.Username, c.Password = s["username"], Secret(s["password"])
	c.Insecure = e.boolOption("insecure", "false")
	c.CAFile = e.fileOption("ca_file")
	e.v.cfg.VCenter = c
}

func vcsimEntry(e *entryCtx) {
	c := &VCSim{}
	e.auth([]string{"", "none"}, nil)
	s := e.option("rate", "2")
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || r <= 0 || r > 10000 {
		e.problem("options.rate", `must be a number of events per second between 0 and 10000, got %q`, s)
	}
	c.Rate = r
	e.v.cfg.VCSim = c
}

func openfaasEntry(e *entryCtx) {
	c := &OpenFaaS{Name: e.name}
	if e.address == "" {
		e.problem("address", "required field is missing (the gateway URL, e.g. http://gateway.openfaas:8080)")
	} else {
		c.Address = strings.TrimRight(e.urlField("address", e.address, ""), "/")
	}
	s := e.auth([]string{"basic_auth"}, map[string][]string{"basic_auth": {"username", "password"}})
	c.Username, c.Password = s["username"], Secret(s["password"])
	c.Async = e.boolOption("async", "false")
	c.RefreshInterval = e.durationOption("refresh_interval", "10s")
	c.Concurrency = e.intOption("concurrency", "64", 1)
	c.Timeout = e.durationOption("timeout", "30s")
	c.RetryLimit = e.intOption("retry_limit", "20", 0)
	c.QueueSize = e.intOption("queue_size", "10000", 1)
	if cb := e.option("callback_url", ""); cb != "" {
		c.CallbackURL = e.urlField("options.callback_url", cb, "")
	}
	e.v.cfg.OpenFaaS = c
}

// What AWS accepts, checked here so that `check` refuses what the daemon
// would: a region such as "eu-central-1" or "us-gov-west-1"; a bus name; a
// rule ARN arn:PARTITION:events:REGION:ACCOUNT:rule/[BUS/]NAME, where a
// partner bus name has slashes of its own.
var (
	regionPattern  = regexp.MustCompile(`^[a-z]{2,}(-[a-z]+)+-[0-9]+$`)
	busPattern     = regexp.MustCompile(`^[/.\-_A-Za-z0-9]{1,256}$`)
	ruleARNPattern = regexp.MustCompile(`^arn:[a-z-]+:events:([a-z0-9-]+):[0-9]+:rule/(?:(.+)/)?([.\-_A-Za-z0-9]{1,64})$`)
)

func eventbridgeEntry(e *entryCtx) {
	c := &EventBridge{Name: e.name}
	e.noAddress()
	s := e.auth([]string{"access_key"}, map[string][]string{"access_key": {"aws_access_key_id", "aws_secret_access_key"}})
	c.AccessKeyID, c.SecretAccessKey = s["aws_access_key_id"], Secret(s["aws_secret_access_key"])
	c.Region = e.option("aws_region", "")
	switch {
	case c.Region == "":
		e.problem("options.aws_region", `required (e.g. "eu-central-1")`)
	case !regionPattern.MatchString(c.Region):
		e.problem("options.aws_region", `must be an AWS region such as "eu-central-1", got %q`, c.Region)
	}
	c.EventBus = e.option("aws_eventbridge_event_bus", "default")
	bus := c.EventBus
	if i := strings.Index(bus, ":event-bus/"); strings.HasPrefix(bus, "arn:") && i >= 0 {
		bus = bus[i+len(":event-bus/"):]
	}
	if !busPattern.MatchString(bus) {
		e.problem("options.aws_eventbridge_event_bus", `must be an event bus name (letters, digits, ".", "-", "_", "/"; at most 256) or its ARN, got %q`, c.EventBus)
	}
	c.RuleARN = e.option("aws_eventbridge_rule_arn", "")
	const arnField = "options.aws_eventbridge_rule_arn"
	if c.RuleARN == "" {
		e.problem(arnField, `required (e.g. "arn:aws:events:eu-central-1:1234567890:rule/vmware-event-router")`)
	} else if m := ruleARNPattern.FindStringSubmatch(c.RuleARN); m == nil {
		e.problem(arnField, `must be a rule ARN "arn:aws:events:REGION:ACCOUNT:rule/NAME" or ".../rule/BUS/NAME", got %q`, c.RuleARN)
	} else {
		region, ruleBus := m[1], m[2]
		if ruleBus == "" {
			ruleBus = "default"
		}
		if region != c.Region && c.Region != "" {
			e.problem(arnField, "%q is in region %q, but options.aws_region is %q", c.RuleARN, region, c.Region)
		}
		if ruleBus != bus {
			e.problem(arnField, "%q names a rule on event bus %q, but options.aws_eventbridge_event_bus is %q: the rule must be on the bus events are put on", c.RuleARN, ruleBus, c.EventBus)
		}
	}
	c.ResyncInterval = e.durationOption("resync_interval", "5m")
	if ep := e.option("endpoint", ""); ep != "" {
		c.Endpoint = e.urlField("options.endpoint", ep, "")
	}
	c.BatchLinger = e.durationOption("batch_linger", "10ms")
	c.RetryLimit = e.intOption("retry_limit", "20", 0)
	c.QueueSize = e.intOption("queue_size", "10000", 1)
	e.v.cfg.EventBridge = c
}

func cloudeventsEntry(e *entryCtx) {
	c := &CloudEvents{Name: e.name, Auth: e.method}
	if e.address == "" {
		e.problem("address", "required field is missing (the sink URL, e.g. http://broker-ingress.knative-eventing.svc.cluster.local/NAMESPACE/default)")
	} else {
		c.Address = e.urlField("address", e.address, "")
	}
	if e.method == "bearer_token" {
		c.Token, c.TokenFile = e.bearerToken()
	} else {
		s := e.auth([]string{"", "none", "basic_auth", "bearer_token"}, map[string][]string{"basic_auth": {"username", "password"}})
		c.Username, c.Password = s["username"], Secret(s["password"])
	}
	switch c.Mode = e.option("mode", "binary"); c.Mode {
	case "binary", "structured":
	default:
		e.problem("options.mode", `must be "binary" or "structured", got %q`, c.Mode)
	}
	c.Timeout = e.durationOption("timeout", "30s")
	c.Concurrency = e.intOption("concurrency", "64", 1)
	c.RetryLimit = e.intOption("retry_limit", "20", 0)
	c.QueueSize = e.intOption("queue_size", "10000", 1)
	c.Insecure = e.boolOption("insecure", "false")
	c.CAFile = e.fileOption("ca_file")
	e.v.cfg.CloudEvents = c
}

// bearerToken reads auth.secret for auth.method "bearer_token": exactly
// one of token (the token itself) and token_file (a file holding it,
// checked to exist here and re-read by the processor when it changes).
func (e *entryCtx) bearerToken() (Secret, string) {
	for k := range e.secret {
		if k != "token" && k != "token_file" {
			e.problem("auth.secret."+k, "unknown field (allowed: token or token_file)")
		}
	}
	token, hasToken := e.secret["token"]
	file, hasFile := e.secret["token_file"]
	switch {
	case hasToken == hasFile:
		e.problem("auth.secret", `auth.method "bearer_token" takes exactly one of token and token_file`)
	case hasToken && token == "":
		e.problem("auth.secret.token", "must not be empty")
	case hasFile && file == "":
		e.problem("auth.secret.token_file", "must not be empty")
	case hasFile && !e.v.offline:
		if _, err := os.Stat(file); err != nil {
			e.problem("auth.secret.token_file", "cannot read %q: %v", file, errors.Unwrap(err))
		}
	}
	return Secret(token), file
}

func stdoutEntry(e *entryCtx) {
	e.noAddress()
	e.auth([]string{"", "none"}, nil)
	e.v.cfg.Stdout = &Stdout{}
}

func wasmEntry(e *entryCtx) {
	c := WasmFilter{Index: e.index, Name: e.name, Address: e.address}
	e.auth([]string{"", "none"}, nil)
	if e.address == "" {
		e.problem("address", "required field is missing (a .wasm or .wasm.gz file, or a directory of them)")
	} else if e.v.offline {
		// checked where the file system is
	} else if fi, err := os.Stat(e.address); err != nil {
		e.problem("address", "cannot read %q: %v", e.address, errors.Unwrap(err))
	} else if !fi.IsDir() && !strings.HasSuffix(e.address, ".wasm") && !strings.HasSuffix(e.address, ".wasm.gz") {
		e.problem("address", "must be a directory or a file ending in .wasm or .wasm.gz, got %q", e.address)
	}
	c.Timeout = e.durationOption("timeout", "100ms")
	switch p := OnError(e.option("on_error", "pass")); p {
	case OnErrorPass, OnErrorDrop, OnErrorDeadLetter:
		c.OnError = p
	default:
		e.problem("options.on_error", `must be "pass", "drop" or "dead_letter", got %q`, string(p))
	}
	c.Config = e.option("config", "")
	c.MemoryLimit = e.sizeOption("memory_limit", "16MiB")
	if c.MemoryLimit > 0 && c.MemoryLimit < 64<<10 {
		e.problem("options.memory_limit", "must be at least 64KiB (one WebAssembly page)")
	}
	if c.MemoryLimit > 4<<30 {
		e.problem("options.memory_limit", "must be at most 4GiB (the 32-bit WebAssembly limit)")
	}
	c.PoolSize = e.intOption("pool_size", "2", 1)
	e.v.cfg.Filters = append(e.v.cfg.Filters, c)
}

func metricsEntry(e *entryCtx) {
	c := Metrics{}
	if e.address == "" {
		e.problem("address", `required field is missing (HOST:PORT to listen on, e.g. "0.0.0.0:8080")`)
	} else if host, port, err := net.SplitHostPort(e.address); err != nil {
		e.problem("address", `must be HOST:PORT (e.g. "0.0.0.0:8080"), got %q`, e.address)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		e.problem("address", "has an invalid port %q", port)
	} else {
		_ = host
		c.Address = e.address
	}
	s := e.auth([]string{"", "none", "basic_auth"}, map[string][]string{"basic_auth": {"username", "password"}})
	if e.method == "basic_auth" {
		c.BasicAuth = true
		c.Username, c.Password = s["username"], Secret(s["password"])
	}
	c.TLSCertFile = e.fileOption("tls_cert_file")
	c.TLSKeyFile = e.fileOption("tls_key_file")
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		e.problem("options.tls_cert_file", "tls_cert_file and tls_key_file go together: set both or neither")
	}
	e.v.cfg.Metrics = c
}

func stateEntry(e *entryCtx) {
	c := &State{Dir: e.address}
	e.auth([]string{"", "none"}, nil)
	if e.address == "" {
		e.problem("address", "required field is missing (a writable directory, e.g. /var/lib/vmware-event-router)")
	} else if e.v.offline {
		// checked where the file system is
	} else if fi, err := os.Stat(e.address); err != nil {
		e.problem("address", "cannot use %q: %v", e.address, errors.Unwrap(err))
	} else if !fi.IsDir() {
		e.problem("address", "%q is not a directory", e.address)
	}
	c.ReplayWindow = e.durationOption("replay_window", "24h")
	c.DeadLetterMaxSize = e.sizeOption("dead_letter_max_size", "100MiB")
	e.v.cfg.State = c
}
