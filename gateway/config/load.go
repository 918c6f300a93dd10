package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
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
	badValue map[string]bool // options already reported as not strings
}

func (e *entryCtx) problem(field, format string, args ...any) {
	e.v.problems = append(e.v.problems, Problem{
		File: e.v.file, Index: e.index, Type: e.typ, Provider: e.provider,
		Field: field, Msg: fmt.Sprintf(format, args...),
	})
}

// problems reports err on field: each of an errors.Join on its own.
func (e *entryCtx) problems(field string, err error) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, err := range j.Unwrap() {
			e.problems(field, err)
		}
		return
	}
	e.problem(field, "%s", err.Error())
}

func (v *validator) fileProblem(format string, args ...any) {
	v.problems = append(v.problems, Problem{File: v.file, Index: -1, Msg: fmt.Sprintf(format, args...)})
}

func knownKinds() string {
	var names []string
	for _, s := range Specs() {
		names = append(names, s.Type+"/"+s.Provider)
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
		spec, ok := registry[[2]string{e.typ, e.provider}]
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
		e.read(spec)
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

// read reads the entry as its spec says: address, auth, every option (the
// kind's, then those its type shares), the spec's checks; then records it.
func (e *entryCtx) read(spec *Spec) {
	addr := e.address
	switch rule := spec.Address; {
	case rule.Ignored:
	case rule.Hint == "":
		if addr != "" {
			e.problem("address", "not used by %s/%s: remove it", e.typ, e.provider)
		}
	case addr == "":
		e.problem("address", "required field is missing (%s)", rule.Hint)
	case rule.Check != nil:
		var err error
		addr, err = rule.Check(addr, e.v.offline)
		e.problems("address", err)
	}
	settings := spec.New(Entry{Index: e.index, Name: e.name, Address: addr})
	e.auth(spec.Auth, settings)
	known := map[string]bool{}
	readOptions := func(target any, options []Option) {
		for _, o := range options {
			known[o.Key] = true
			v, set := e.options[o.Key]
			if !set {
				v = o.Default
			}
			if !e.badValue[o.Key] {
				e.problems("options."+o.Key, o.set(target, v, e.v.offline))
			}
		}
	}
	readOptions(settings, spec.Options)
	cfg := e.v.cfg
	switch e.typ {
	case TypeStream:
		cfg.Streams = append(cfg.Streams, Stream{Name: e.name, Spec: spec, Settings: settings})
	case TypeProcessor:
		p := Processor{Name: e.name, Spec: spec, Settings: settings}
		readOptions(&p, processorOptions)
		if len(p.Streams) > 0 {
			e.v.procStreams = append(e.v.procStreams, procStreams{e, p.Streams})
		}
		cfg.Processors = append(cfg.Processors, p)
		if len(cfg.Processors) == 1 {
			cfg.Pattern = p.Pattern
		}
	case TypeFilter:
		cfg.Filters = append(cfg.Filters, *settings.(*WasmFilter))
	case TypeMetrics, TypeInternal:
		if s, ok := settings.(*State); ok {
			cfg.State = s
		} else {
			cfg.Metrics = *settings.(*Metrics)
		}
	}
	if spec.Check != nil {
		spec.Check(settings, &Checker{Offline: e.v.offline, e: e})
	}
	for k := range e.options {
		if !known[k] {
			e.problem("options."+k, "unknown option for %s/%s%s", e.typ, e.provider, knownList(known))
		}
	}
}

// procStreams is a processor entry's "streams" option, checked once every
// stream entry is read.
type procStreams struct {
	e     *entryCtx
	names []string
}

// knownList lists the options an entry's kind takes, for messages.
func knownList(known map[string]bool) string {
	if len(known) == 0 {
		return " (it takes no options)"
	}
	keys := make([]string, 0, len(known))
	for k := range known {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return " (known: " + strings.Join(keys, ", ") + ")"
}

// auth checks auth.method is one of methods and records the secret's keys
// in settings. With a "none" method the entry may omit auth.
func (e *entryCtx) auth(methods []AuthMethod, settings any) {
	names := make([]string, len(methods))
	optional := false
	for i, m := range methods {
		names[i] = m.Name
		optional = optional || m.Name == NoAuth.Name
	}
	method := e.method
	if method == "" {
		if !optional {
			e.problem("auth.method", "required field is missing (must be %s)", quoteList(names))
		} else if len(e.secret) > 0 {
			e.problem("auth.method", "required with auth.secret (must be %s)", quoteList(names))
		}
		return
	}
	i := slices.Index(names, method)
	if i < 0 {
		e.problem("auth.method", "must be %s, got %q", quoteList(names), method)
		return
	}
	want := methods[i].Keys
	got := map[string]string{}
	for _, k := range want {
		s, present := e.secret[k]
		switch {
		case present && s != "":
			got[k] = s
		case !methods[i].ExactlyOne:
			e.problem("auth.secret."+k, "required for auth.method %q", method)
		}
	}
	if methods[i].ExactlyOne && len(got) != 1 {
		e.problem("auth.secret", "auth.method %q takes exactly one of %s", method, strings.Join(want, ", "))
	}
	for k := range e.secret {
		if !slices.Contains(want, k) {
			if len(want) == 0 {
				e.problem("auth.secret."+k, "unknown field: auth.method %q takes no secret", method)
			} else {
				e.problem("auth.secret."+k, "unknown field (allowed: %s)", strings.Join(want, ", "))
			}
		}
	}
	if methods[i].set != nil {
		methods[i].set(settings, got)
	}
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
	e.badValue = map[string]bool{}
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
			e.badValue[k] = true
			continue
		}
		e.options[k] = s
	}
}

// quoteList quotes items and joins them with "or".
func quoteList(items []string) string {
	var q []string
	for _, s := range items {
		if s != "" {
			q = append(q, strconv.Quote(s))
		}
	}
	return strings.Join(q, " or ")
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
