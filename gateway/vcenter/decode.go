package vcenter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// The stream's answers (a latest page in a WaitForUpdatesEx answer, a page
// of ReadNextEvents) are decoded here, not by govmomi's decoder: that one
// tokenises through interfaces, allocates for every token and looks up
// struct fields by reflection at every element, which made it the largest
// share of the stream's CPU per event at a trickle.
//
// fastDecoder does the same work as govmomi's vim25/xml decoder for the
// part of XML and of the Go types that vSphere answers use, with the
// field plans of each type built once: element fields matched by their
// local name, attributes, chardata, embedded structs, pointers, slices,
// interfaces resolved by xsi:type through the same type registry, and
// time.Time by its UnmarshalText. Everything else (comments, CDATA,
// processing instructions, a carriage return, an entity beyond XML's five,
// text that is not valid XML characters, a SOAP fault, a Go type with its
// own XML unmarshaller, a namespaced or nested tag) makes it give up with
// errFallback before it hands anything on, and the caller decodes the same
// bytes with govmomi's decoder, so every answer decodes exactly as govmomi
// decodes it. decode_test.go checks the two agree on every event type the
// SDK knows.

// errFallback says the answer holds something fastDecoder leaves to
// govmomi's decoder.
var errFallback = errors.New("outside what the fast decoder handles")

// maxFastDepth bounds the nesting fastDecoder follows; deeper answers go to
// govmomi's decoder (whose own limit is 10,000).
const maxFastDepth = 500

// fastDecoder decodes one SOAP answer held in b.
type fastDecoder struct {
	b   []byte
	i   int
	tf  types.Func
	buf []byte    // scratch for character data
	ns  []binding // prefixes declared by the elements open

	free     []*tag // tags of elements done, for reuse
	prefixed []attr // scratch: a start tag's prefixed attributes
}

// newTag returns a cleared tag, reused when one is free.
func (d *fastDecoder) newTag() *tag {
	if n := len(d.free); n > 0 {
		t := d.free[n-1]
		d.free = d.free[:n-1]
		*t = tag{attrs: t.attrs[:0]}
		return t
	}
	return new(tag)
}

// tag is a start tag.
type tag struct {
	name    []byte // as written, with its prefix
	local   []byte
	xsiType string
	hasType bool
	attrs   []attr // unprefixed attributes other than xmlns
	empty   bool   // <name/>
	bound   int    // namespace prefixes it declares
}

// binding is a namespace prefix declaration in scope.
type binding struct {
	prefix, url string
}

type attr struct {
	local []byte
	value []byte // aliases the answer or a fresh buffer
}

const xsiURL = "http://www.w3.org/2001/XMLSchema-instance"

// decodeBody decodes the SOAP answer b, whose body must hold one element
// named resName, into res (a pointer to the response struct).
func decodeBody(b []byte, tf types.Func, resName string, res any) error {
	d := &fastDecoder{b: b, tf: tf}
	d.skipSpace()
	if bytes.HasPrefix(d.b[d.i:], []byte("<?xml")) {
		end := bytes.Index(d.b[d.i:], []byte("?>"))
		if end < 0 {
			return errFallback
		}
		// Another encoding needs govmomi's charset reader.
		decl := bytes.ToLower(d.b[d.i : d.i+end])
		if i := bytes.Index(decl, []byte("encoding=")); i >= 0 && !bytes.HasPrefix(decl[i+len("encoding="):], []byte(`"utf-8"`)) {
			return errFallback
		}
		d.i += end + 2
	}
	env, err := d.startOf("Envelope")
	if err != nil {
		return err
	}
	body, err := d.startOf("Body")
	if err != nil {
		return err
	}
	resp, err := d.startOf(resName)
	if err != nil {
		return err
	}
	if err := d.value(reflect.ValueOf(res).Elem(), resp, 0); err != nil {
		return err
	}
	for _, t := range []*tag{body, env} {
		d.skipSpace()
		if err := d.endTag(t); err != nil {
			return err
		}
	}
	return nil
}

// startOf reads the next start tag, which must be named local and not be
// empty.
func (d *fastDecoder) startOf(local string) (*tag, error) {
	d.skipSpace()
	if d.i >= len(d.b) || d.b[d.i] != '<' {
		return nil, errFallback
	}
	t := new(tag)
	if err := d.startTag(t); err != nil {
		return nil, err
	}
	if string(t.local) != local || t.empty {
		return nil, errFallback
	}
	return t, nil
}

func (d *fastDecoder) skipSpace() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n':
			d.i++
		default:
			return
		}
	}
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == ':' || c == '.' || c == '-'
}

// name reads a name at d.i.
func (d *fastDecoder) name() ([]byte, error) {
	s := d.i
	for d.i < len(d.b) && isNameByte(d.b[d.i]) {
		d.i++
	}
	n := d.b[s:d.i]
	if len(n) == 0 || !isNameStart(n[0]) {
		return nil, errFallback
	}
	return n, nil
}

// splitName splits a qualified name as encoding/xml does.
func splitName(n []byte) (prefix, local []byte) {
	if i := bytes.IndexByte(n, ':'); i >= 1 && i < len(n)-1 {
		return n[:i], n[i+1:]
	}
	return nil, n
}

// startTag reads a start tag; d.i is at its '<'.
func (d *fastDecoder) startTag(t *tag) error {
	d.i++
	n, err := d.name()
	if err != nil {
		return err
	}
	t.name = n
	_, t.local = splitName(n)
	d.prefixed = d.prefixed[:0]
	for {
		d.skipSpace()
		if d.i >= len(d.b) {
			return errFallback
		}
		switch d.b[d.i] {
		case '>':
			d.i++
			return d.resolve(t, d.prefixed)
		case '/':
			if d.i+1 >= len(d.b) || d.b[d.i+1] != '>' {
				return errFallback
			}
			d.i += 2
			t.empty = true
			err := d.resolve(t, d.prefixed)
			d.ns = d.ns[:len(d.ns)-t.bound]
			return err
		}
		an, err := d.name()
		if err != nil {
			return err
		}
		d.skipSpace()
		if d.i >= len(d.b) || d.b[d.i] != '=' {
			return errFallback
		}
		d.i++
		d.skipSpace()
		if d.i >= len(d.b) || d.b[d.i] != '"' && d.b[d.i] != '\'' {
			return errFallback
		}
		q := d.b[d.i]
		d.i++
		end := bytes.IndexByte(d.b[d.i:], q)
		if end < 0 {
			return errFallback
		}
		raw := d.b[d.i : d.i+end]
		d.i += end + 1
		if bytes.IndexByte(raw, '<') >= 0 {
			return errFallback
		}
		v, err := d.text(raw)
		if err != nil {
			return err
		}
		prefix, local := splitName(an)
		switch {
		case string(an) == "xmlns":
		case string(prefix) == "xmlns":
			// A prefix named type would make a "type" attribute of
			// its declaration.
			if string(local) == "type" || bytes.HasSuffix(v, []byte("XMLSchema-instance")) && string(v) != xsiURL {
				return errFallback
			}
			d.ns = append(d.ns, binding{prefix: string(local), url: string(v)})
			t.bound++
		case prefix == nil:
			t.attrs = append(t.attrs, attr{local: an, value: v})
		default:
			d.prefixed = append(d.prefixed, attr{local: an, value: v})
		}
	}
}

// resolve sets t's xsi:type from its prefixed attributes, once t's own
// namespace declarations are in scope: a prefix bound to the
// XMLSchema-instance namespace, or xsi unbound, as encoding/xml resolves
// it. Any other prefixed attribute is govmomi's to decode.
func (d *fastDecoder) resolve(t *tag, prefixed []attr) error {
	for _, a := range prefixed {
		prefix, local := splitName(a.local)
		if string(local) != "type" {
			return errFallback
		}
		url, bound := "", false
		for i := len(d.ns) - 1; i >= 0; i-- {
			if d.ns[i].prefix == string(prefix) {
				url, bound = d.ns[i].url, true
				break
			}
		}
		if bound && url != xsiURL || !bound && string(prefix) != "xsi" {
			return errFallback
		}
		t.xsiType, t.hasType = string(a.value), true
	}
	return nil
}

// endTag reads the end tag of t (nothing for an empty element).
func (d *fastDecoder) endTag(t *tag) error {
	if t.empty {
		return nil
	}
	d.ns = d.ns[:len(d.ns)-t.bound]
	if !bytes.HasPrefix(d.b[d.i:], []byte("</")) {
		return errFallback
	}
	d.i += 2
	n, err := d.name()
	if err != nil || !bytes.Equal(n, t.name) {
		return errFallback
	}
	d.skipSpace()
	if d.i >= len(d.b) || d.b[d.i] != '>' {
		return errFallback
	}
	d.i++
	return nil
}

// text returns raw with its references replaced, or errFallback where
// govmomi's decoder would do more than that (or fail).
func (d *fastDecoder) text(raw []byte) ([]byte, error) {
	plain := true
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '&':
			plain = false
			i++
		case c == '\t' || c == '\n' || c >= 0x20 && c < utf8.RuneSelf:
			if c == ']' && bytes.HasPrefix(raw[i:], []byte("]]>")) {
				return nil, errFallback
			}
			i++
		case c < 0x20:
			return nil, errFallback // \r (normalised by XML) or illegal
		default:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 || !inCharRange(r) {
				return nil, errFallback
			}
			i += size
		}
	}
	if plain {
		return raw, nil
	}
	out := make([]byte, 0, len(raw))
	for len(raw) > 0 {
		a := bytes.IndexByte(raw, '&')
		if a < 0 {
			out = append(out, raw...)
			break
		}
		out = append(out, raw[:a]...)
		raw = raw[a+1:]
		semi := bytes.IndexByte(raw, ';')
		if semi < 0 {
			return nil, errFallback
		}
		ref := string(raw[:semi])
		raw = raw[semi+1:]
		switch ref {
		case "lt":
			out = append(out, '<')
		case "gt":
			out = append(out, '>')
		case "amp":
			out = append(out, '&')
		case "apos":
			out = append(out, '\'')
		case "quot":
			out = append(out, '"')
		default:
			r, ok := charRef(ref)
			if !ok {
				return nil, errFallback
			}
			out = utf8.AppendRune(out, r)
		}
	}
	return out, nil
}

// charRef decodes a character reference's name (#65, #x41).
func charRef(ref string) (rune, bool) {
	if len(ref) < 2 || ref[0] != '#' {
		return 0, false
	}
	base, digits := 10, ref[1:]
	if digits[0] == 'x' {
		base, digits = 16, digits[1:]
	}
	if digits == "" || len(digits) > 8 {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if !isDigit(c, base) {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(digits, base, 32)
	if err != nil || !inCharRange(rune(n)) {
		return 0, false
	}
	return rune(n), true
}

func inCharRange(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// content reads t's content up to and including its end tag. Character
// data directly in t is appended to *data when data is not nil; each child
// element named in p is decoded into its field of sv, and every other one
// skipped.
func (d *fastDecoder) content(t *tag, data *[]byte, p *structPlan, sv reflect.Value, depth int) error {
	if t.empty {
		return nil
	}
	for {
		lt := bytes.IndexByte(d.b[d.i:], '<')
		if lt < 0 {
			return errFallback
		}
		raw := d.b[d.i : d.i+lt]
		d.i += lt
		if len(raw) > 0 {
			txt, err := d.text(raw)
			if err != nil {
				return err
			}
			if data != nil {
				*data = append(*data, txt...)
			}
		}
		if d.i+1 >= len(d.b) {
			return errFallback
		}
		switch d.b[d.i+1] {
		case '/':
			return d.endTag(t)
		case '!', '?':
			return errFallback
		}
		ct := d.newTag()
		if err := d.startTag(ct); err != nil {
			return err
		}
		if depth+1 >= maxFastDepth {
			return errFallback
		}
		var idx []int
		if p != nil {
			idx = p.elems[string(ct.local)]
		}
		var err error
		if idx != nil {
			err = d.value(sv.FieldByIndex(idx), ct, depth+1)
		} else {
			err = d.content(ct, nil, nil, reflect.Value{}, depth+1)
		}
		if err != nil {
			return err
		}
		d.free = append(d.free, ct)
	}
}

// The Go types the decoder treats apart.
var (
	timeT      = reflect.TypeFor[time.Time]()
	eventElemT = reflect.TypeFor[eventElem]()
	baseEventT = reflect.TypeFor[types.BaseEvent]()
	unmarshalT = []reflect.Type{
		reflect.TypeFor[xml.Unmarshaler](),
		reflect.TypeFor[xml.UnmarshalerAttr](),
		reflect.TypeFor[interface{ UnmarshalText([]byte) error }](),
	}
)

// value decodes the element t into v, as govmomi's Decoder.unmarshal does.
func (d *fastDecoder) value(v reflect.Value, t *tag, depth int) error {
	if depth >= maxFastDepth {
		return errFallback
	}
	if v.Kind() == reflect.Interface {
		if !v.IsNil() {
			return errFallback // never so in a fresh value
		}
		typ := d.typeFor(v.Type(), t)
		if typ == nil {
			return d.content(t, nil, nil, reflect.Value{}, depth) // govmomi skips it
		}
		pv := reflect.New(typ).Elem()
		if err := d.value(pv, t, depth); err != nil {
			return err
		}
		for range 2 {
			if typ.Implements(v.Type()) {
				v.Set(pv)
				return nil
			}
			typ = reflect.PointerTo(typ)
			pv = pv.Addr()
		}
		v.Set(pv)
		return nil
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	typ := v.Type()
	switch {
	case typ == eventElemT:
		return d.event(v.Addr().Interface().(*eventElem), t, depth)
	case typ == timeT:
		var data []byte
		if err := d.content(t, &data, nil, reflect.Value{}, depth); err != nil {
			return err
		}
		return v.Addr().Interface().(*time.Time).UnmarshalText(data)
	case ownUnmarshaler(typ):
		return errFallback
	}
	switch v.Kind() {
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 {
			return d.scalar(v, t, depth)
		}
		n := v.Len()
		v.Grow(1)
		v.SetLen(n + 1)
		if err := d.value(v.Index(n), t, depth+1); err != nil {
			v.SetLen(n)
			return err
		}
		return nil
	case reflect.Struct:
		return d.structValue(v, t, depth)
	case reflect.Bool, reflect.Float32, reflect.Float64, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr, reflect.String:
		return d.scalar(v, t, depth)
	}
	return errFallback
}

var ownUnmarshalers sync.Map // reflect.Type -> bool

// ownUnmarshaler reports whether typ (or its pointer) decodes itself.
func ownUnmarshaler(typ reflect.Type) bool {
	if v, ok := ownUnmarshalers.Load(typ); ok {
		return v.(bool)
	}
	own := false
	for _, u := range unmarshalT {
		own = own || typ.Implements(u) || reflect.PointerTo(typ).Implements(u)
	}
	ownUnmarshalers.Store(typ, own)
	return own
}

// typeFor is govmomi's typeForElement: the xsi:type, else the interface's
// name, as a basic xsd type or through the registry.
func (d *fastDecoder) typeFor(iface reflect.Type, t *tag) reflect.Type {
	name := t.xsiType
	if !t.hasType || name == "" {
		name = iface.Name()
	}
	if typ := xsdType(name); typ != nil {
		return typ
	}
	if d.tf != nil {
		if typ, ok := d.tf(name); ok {
			return typ
		}
	}
	return nil
}

var xsdTypes = map[string]reflect.Type{
	"boolean":       reflect.TypeFor[bool](),
	"byte":          reflect.TypeFor[int8](),
	"short":         reflect.TypeFor[int16](),
	"int":           reflect.TypeFor[int32](),
	"long":          reflect.TypeFor[int64](),
	"unsignedByte":  reflect.TypeFor[uint8](),
	"unsignedShort": reflect.TypeFor[uint16](),
	"unsignedInt":   reflect.TypeFor[uint32](),
	"unsignedLong":  reflect.TypeFor[uint64](),
	"float":         reflect.TypeFor[float32](),
	"double":        reflect.TypeFor[float64](),
	"string":        reflect.TypeFor[string](),
	"dateTime":      timeT,
	"base64Binary":  reflect.TypeFor[[]byte](),
}

func xsdType(s string) reflect.Type {
	if rest, ok := strings.CutPrefix(s, "xs:"); ok {
		s = rest
	} else if rest, ok := strings.CutPrefix(s, "xsd:"); ok {
		s = rest
	}
	return xsdTypes[s]
}

// scalar decodes t's character data into v as govmomi's copyValue does.
func (d *fastDecoder) scalar(v reflect.Value, t *tag, depth int) error {
	d.buf = d.buf[:0]
	if err := d.content(t, &d.buf, nil, reflect.Value{}, depth); err != nil {
		return err
	}
	return setScalar(v, d.buf)
}

func setScalar(v reflect.Value, src []byte) error {
	switch v.Kind() {
	case reflect.String:
		v.SetString(string(src))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if len(src) == 0 {
			v.SetInt(0)
			return nil
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(src)), 10, v.Type().Bits())
		if err != nil {
			return errFallback // govmomi's error, from govmomi
		}
		v.SetInt(n)
	case reflect.Bool:
		if len(src) == 0 {
			v.SetBool(false)
			return nil
		}
		b, err := strconv.ParseBool(strings.TrimSpace(string(src)))
		if err != nil {
			return errFallback
		}
		v.SetBool(b)
	case reflect.Float32, reflect.Float64:
		if len(src) == 0 {
			v.SetFloat(0)
			return nil
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(string(src)), v.Type().Bits())
		if err != nil {
			return errFallback
		}
		v.SetFloat(f)
	case reflect.Slice: // []byte, as it is (not base64)
		v.SetBytes(append([]byte{}, src...))
	default:
		// Unsigned numbers (two's complement rules) are not in events.
		return errFallback
	}
	return nil
}

// structPlan is how a struct type's elements and attributes map to its
// fields.
type structPlan struct {
	elems    map[string][]int
	attrs    map[string][]int
	charData []int // nil: none
	err      error // errFallback: a field fastDecoder leaves to govmomi
}

var plans sync.Map // reflect.Type -> *structPlan

func planOf(typ reflect.Type) *structPlan {
	if p, ok := plans.Load(typ); ok {
		return p.(*structPlan)
	}
	p := &structPlan{elems: map[string][]int{}, attrs: map[string][]int{}}
	p.err = p.add(typ, nil)
	if p.err == nil && typ.NumField() > 0 {
		if _, ok := typ.FieldByName("XMLName"); ok {
			p.err = errFallback
		}
	}
	got, _ := plans.LoadOrStore(typ, p)
	return got.(*structPlan)
}

// add adds typ's fields, as govmomi's GetTypeInfo finds them; any name met
// twice makes the type govmomi's to decode.
func (p *structPlan) add(typ reflect.Type, index []int) error {
	for i := range typ.NumField() {
		f := typ.Field(i)
		tagv := f.Tag.Get("xml")
		if !f.IsExported() && !f.Anonymous || tagv == "-" {
			continue
		}
		idx := append(append([]int{}, index...), i)
		if f.Anonymous {
			switch {
			case f.Type.Kind() == reflect.Struct:
				if err := p.add(f.Type, idx); err != nil {
					return err
				}
				continue
			case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
				return errFallback // nil embedded pointers: govmomi's
			}
		}
		name, opts, _ := strings.Cut(tagv, ",")
		if name == "" {
			name = f.Name
		}
		if strings.ContainsAny(name, " >") {
			return errFallback
		}
		mode := ""
		for o := range strings.SplitSeq(opts, ",") {
			switch o {
			case "", "omitempty", "typeattr":
			case "attr", "chardata":
				if mode != "" {
					return errFallback
				}
				mode = o
			default:
				return errFallback
			}
		}
		var m map[string][]int
		switch mode {
		case "chardata":
			if p.charData != nil {
				return errFallback
			}
			p.charData = idx
			continue
		case "attr":
			if strings.Contains(opts, "typeattr") || f.Type.Kind() != reflect.String {
				return errFallback
			}
			m = p.attrs
		default:
			m = p.elems
		}
		if _, dup := m[name]; dup {
			return errFallback
		}
		m[name] = idx
	}
	return nil
}

func (d *fastDecoder) structValue(v reflect.Value, t *tag, depth int) error {
	p := planOf(v.Type())
	if p.err != nil {
		return p.err
	}
	for _, a := range t.attrs {
		if idx, ok := p.attrs[string(a.local)]; ok {
			v.FieldByIndex(idx).SetString(string(a.value))
		}
	}
	var data *[]byte
	var cd reflect.Value
	if p.charData != nil {
		cd = v.FieldByIndex(p.charData)
		if cd.Kind() != reflect.String {
			return errFallback
		}
		data = new([]byte)
	}
	if err := d.content(t, data, p, v, depth); err != nil {
		return err
	}
	if data != nil {
		cd.SetString(string(*data))
	}
	return nil
}

// event is eventElem.UnmarshalXML: the xsi:type's event when the registry
// knows it, else an UnknownEvent.
func (d *fastDecoder) event(e *eventElem, t *tag, depth int) error {
	name := ""
	if t.hasType {
		name = t.xsiType
	}
	if d.tf != nil && name != "" {
		if typ, ok := d.tf(name); ok && reflect.PointerTo(typ).Implements(baseEventT) {
			v := reflect.New(typ)
			if err := d.value(v, t, depth); err != nil {
				return err
			}
			e.ev = v.Interface().(types.BaseEvent)
			return nil
		}
	}
	u := &UnknownEvent{typeName: localName(name)}
	if u.typeName == "" {
		u.typeName = "Event"
	}
	if err := d.value(reflect.ValueOf(&u.Event), t, depth); err != nil {
		return err
	}
	e.ev = u
	return nil
}

// requestXML is req as soap.Client writes it.
func requestXML(req soap.HasFault) ([]byte, error) {
	b, err := xml.Marshal(soap.Envelope{Body: req})
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), b...), nil
}

// versionMark stands for the version in waitTemplate.
const versionMark = "evr-version-mark"

// waitTemplate is a WaitForUpdatesEx request as requestXML writes it, cut
// where its version goes: the stream's waits differ in nothing else, so a
// wait costs a copy instead of a marshalling.
type waitTemplate struct {
	req        types.WaitForUpdatesEx // the request it was made for, version aside
	head, tail []byte
}

// request returns req written as a request.
func (w *waitTemplate) request(req *types.WaitForUpdatesEx) ([]byte, error) {
	if req.Version == "" {
		// omitempty leaves the element out: not the template's shape.
		return requestXML(&methods.WaitForUpdatesExBody{Req: req})
	}
	if w.head == nil || !sameWait(&w.req, req) {
		r := *req
		r.Version = versionMark
		b, err := requestXML(&methods.WaitForUpdatesExBody{Req: &r})
		if err != nil {
			return nil, err
		}
		i := bytes.Index(b, []byte(versionMark))
		if i < 0 {
			return nil, errors.New("the version is not in the marshalled request")
		}
		w.req, w.head, w.tail = r, b[:i], b[i+len(versionMark):]
	}
	var v bytes.Buffer
	if err := xml.EscapeText(&v, []byte(req.Version)); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(w.head)+v.Len()+len(w.tail))
	return append(append(append(out, w.head...), v.Bytes()...), w.tail...), nil
}

// sameWait reports whether a and b differ at most in their version.
func sameWait(a, b *types.WaitForUpdatesEx) bool {
	x, y := *a, *b
	x.Version, y.Version = "", ""
	return reflect.DeepEqual(x, y)
}

// verifyFast, set by the tests, is called with every answer fastDecoder
// decoded and what it decoded, to compare with govmomi's decoding.
var verifyFast func(raw []byte, tf types.Func, res soap.HasFault)

// soapCall is c.RoundTrip(ctx, req, res) whose answer is decoded by fast
// (which stores what it decoded in res) and, when fast gives up, by
// govmomi's decoder as soap.Client does. ctx must carry capt
// (withCapture). A client that signs or sets SOAP headers of its own goes
// the SDK's way.
// body, when not nil, is req already written as a request (see
// requestXML).
func soapCall(ctx context.Context, c *vim25.Client, capt *capture, body []byte, req, res soap.HasFault, fast func(body []byte, tf types.Func) error) error {
	sc, ok := c.RoundTripper.(*soap.Client)
	if !ok || sc != c.Client || sc.Cookie != nil {
		return c.RoundTrip(ctx, req, res)
	}
	if body == nil {
		var err error
		if body, err = requestXML(req); err != nil {
			return err
		}
	}
	hr, err := http.NewRequest(http.MethodPost, sc.URL().String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", `text/xml; charset="utf-8"`)
	hr.Header.Set("SOAPAction", sc.Namespace+"/"+sc.Version)
	return sc.Do(ctx, hr, func(hres *http.Response) error {
		switch hres.StatusCode {
		case http.StatusOK, http.StatusInternalServerError:
		default:
			return fmt.Errorf("%s %s", hres.Proto, hres.Status)
		}
		var raw []byte
		if capt.ok {
			raw = capt.body.Bytes()
		} else if raw, err = io.ReadAll(hres.Body); err != nil {
			return err
		}
		if hres.StatusCode == http.StatusOK && fast(raw, sc.Types) == nil {
			if verifyFast != nil {
				verifyFast(raw, sc.Types, res)
			}
			return nil
		}
		dec := xml.NewDecoder(bytes.NewReader(raw))
		dec.TypeFunc = sc.Types
		if err := dec.Decode(&soap.Envelope{Body: res}); err != nil {
			return err
		}
		if f := res.Fault(); f != nil {
			return soap.WrapSoapFault(f)
		}
		return nil
	})
}

// isNameStart reports whether c may start a name (the ASCII subset the fast
// decoder takes; anything else falls back to govmomi's decoder).
func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

// isDigit reports whether c is a digit in base 10 or 16.
func isDigit(c byte, base int) bool {
	switch {
	case '0' <= c && c <= '9':
		return true
	case base != 16:
		return false
	}
	return 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
