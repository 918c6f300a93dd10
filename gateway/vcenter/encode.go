package vcenter

import (
	"encoding/base64"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vmware/govmomi/vim25/types"
)

// encodeFunc appends the JSON form of v to b.
type encodeFunc func(b []byte, v reflect.Value) []byte

// dataEncoder writes vSphere objects as JSON with their Go field names, the
// way encoding/json wrote govmomi's types before they carried lowerCamel
// json tags (the shape of the spec's example event): tags are ignored,
// embedded structs are flattened, every field is written (no omitempty),
// nil pointers, slices and interfaces are null, interfaces are written as
// their concrete value, time.Time is RFC 3339 with nanoseconds in UTC and a
// ManagedObjectReference is {"Type","Value"}.
//
// Encoders are built once per Go type and cached, so an event costs one walk
// over its fields and no reflection on struct tags.
type dataEncoder struct {
	cache sync.Map // reflect.Type -> encodeFunc

	mu       sync.Mutex                   // serialises building
	building map[reflect.Type]*encodeFunc // in progress, for recursive types
}

func newDataEncoder() *dataEncoder {
	return &dataEncoder{building: map[reflect.Type]*encodeFunc{}}
}

// encode appends the JSON form of v (any value) to b.
func (d *dataEncoder) encode(b []byte, v any) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	rv := reflect.ValueOf(v)
	return d.typeEncoder(rv.Type())(b, rv)
}

func (d *dataEncoder) typeEncoder(t reflect.Type) encodeFunc {
	if f, ok := d.cache.Load(t); ok {
		return f.(encodeFunc)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.build(t)
	return f
}

// build returns t's encoder; d.mu is held. A recursive type (a fault whose
// FaultCause holds another fault) meets itself while being built: it then
// gets a forwarding function that calls the finished encoder.
func (d *dataEncoder) build(t reflect.Type) encodeFunc {
	if f, ok := d.cache.Load(t); ok {
		return f.(encodeFunc)
	}
	if p, ok := d.building[t]; ok {
		return func(b []byte, v reflect.Value) []byte { return (*p)(b, v) }
	}
	p := new(encodeFunc)
	d.building[t] = p
	*p = d.newEncoder(t)
	delete(d.building, t)
	d.cache.Store(t, *p)
	return *p
}

var (
	timeType = reflect.TypeFor[time.Time]()
	morType  = reflect.TypeFor[types.ManagedObjectReference]()
)

func (d *dataEncoder) newEncoder(t reflect.Type) encodeFunc {
	switch t {
	case timeType:
		return encodeTime
	case morType:
		return encodeMOR
	}
	switch t.Kind() {
	case reflect.Bool:
		return func(b []byte, v reflect.Value) []byte { return strconv.AppendBool(b, v.Bool()) }
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(b []byte, v reflect.Value) []byte { return strconv.AppendInt(b, v.Int(), 10) }
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return func(b []byte, v reflect.Value) []byte { return strconv.AppendUint(b, v.Uint(), 10) }
	case reflect.Float32:
		return func(b []byte, v reflect.Value) []byte { return appendFloat(b, v.Float(), 32) }
	case reflect.Float64:
		return func(b []byte, v reflect.Value) []byte { return appendFloat(b, v.Float(), 64) }
	case reflect.String:
		return func(b []byte, v reflect.Value) []byte { return appendString(b, v.String()) }
	case reflect.Interface:
		return d.encodeInterface
	case reflect.Pointer:
		elem := d.build(t.Elem())
		return func(b []byte, v reflect.Value) []byte {
			if v.IsNil() {
				return append(b, "null"...)
			}
			return elem(b, v.Elem())
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return encodeBytes
		}
		elem := d.build(t.Elem())
		return func(b []byte, v reflect.Value) []byte {
			if v.IsNil() {
				return append(b, "null"...)
			}
			return encodeArray(b, v, elem)
		}
	case reflect.Array:
		elem := d.build(t.Elem())
		return func(b []byte, v reflect.Value) []byte { return encodeArray(b, v, elem) }
	case reflect.Map:
		return d.mapEncoder(t)
	case reflect.Struct:
		return d.structEncoder(t)
	}
	// Channels, functions and unsafe pointers have no JSON form; vSphere
	// types hold none, so this only keeps the output valid.
	return func(b []byte, _ reflect.Value) []byte { return append(b, "null"...) }
}

func (d *dataEncoder) encodeInterface(b []byte, v reflect.Value) []byte {
	if v.IsNil() {
		return append(b, "null"...)
	}
	e := v.Elem()
	return d.typeEncoder(e.Type())(b, e)
}

func encodeArray(b []byte, v reflect.Value, elem encodeFunc) []byte {
	b = append(b, '[')
	for i := range v.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		b = elem(b, v.Index(i))
	}
	return append(b, ']')
}

func encodeBytes(b []byte, v reflect.Value) []byte {
	if v.IsNil() {
		return append(b, "null"...)
	}
	s := v.Bytes()
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, s)
	return append(b, '"')
}

func encodeTime(b []byte, v reflect.Value) []byte {
	var t time.Time
	if v.CanAddr() {
		t = *(*time.Time)(v.Addr().UnsafePointer()) // no allocation, unlike Interface
	} else {
		t = v.Interface().(time.Time)
	}
	b = append(b, '"')
	b = appendTime(b, t.UTC(), false)
	return append(b, '"')
}

func encodeMOR(b []byte, v reflect.Value) []byte {
	b = append(b, `{"Type":`...)
	b = appendString(b, v.Field(0).String())
	b = append(b, `,"Value":`...)
	b = appendString(b, v.Field(1).String())
	return append(b, '}')
}

func (d *dataEncoder) mapEncoder(t reflect.Type) encodeFunc {
	elem := d.build(t.Elem())
	return func(b []byte, v reflect.Value) []byte {
		if v.IsNil() {
			return append(b, "null"...)
		}
		type kv struct {
			k string
			v reflect.Value
		}
		kvs := make([]kv, 0, v.Len())
		it := v.MapRange()
		for it.Next() {
			k := it.Key()
			var ks string
			switch k.Kind() {
			case reflect.String:
				ks = k.String()
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				ks = strconv.FormatInt(k.Int(), 10)
			case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
				ks = strconv.FormatUint(k.Uint(), 10)
			default:
				continue // encoding/json refuses such maps; vSphere has none
			}
			kvs = append(kvs, kv{ks, it.Value()})
		}
		sort.Slice(kvs, func(i, j int) bool { return kvs[i].k < kvs[j].k })
		b = append(b, '{')
		for i, e := range kvs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, e.k)
			b = append(b, ':')
			b = elem(b, e.v)
		}
		return append(b, '}')
	}
}

// field is one JSON member of a struct: its quoted name with the colon,
// the path of indexes to it through embedded structs, and its encoder.
type field struct {
	name  string
	key   []byte // `"Name":`
	index []int
	typ   reflect.Type
	enc   encodeFunc
}

func (d *dataEncoder) structEncoder(t reflect.Type) encodeFunc {
	fields := visibleFields(t)
	for i := range fields {
		f := &fields[i]
		f.key = append(appendString(nil, f.name), ':')
		f.enc = d.build(f.typ)
	}
	return func(b []byte, v reflect.Value) []byte {
		b = append(b, '{')
		first := true
		for i := range fields {
			f := &fields[i]
			fv, ok := fieldByIndex(v, f.index)
			if !ok {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, f.key...)
			b = f.enc(b, fv)
		}
		return append(b, '}')
	}
}

// fieldByIndex follows index through embedded structs; ok is false when an
// embedded pointer on the way is nil (encoding/json then omits the field).
func fieldByIndex(v reflect.Value, index []int) (reflect.Value, bool) {
	if len(index) == 1 {
		return v.Field(index[0]), true
	}
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, true
}

// visibleFields lists the JSON members of struct type t by encoding/json's
// rules, with each field's Go name (tags ignored): exported fields, fields
// of embedded structs promoted, a name at a shallower depth hiding deeper
// ones, and names that conflict at the same depth dropped.
func visibleFields(t reflect.Type) []field {
	type level struct {
		typ   reflect.Type
		index []int
	}
	var (
		fields    []field
		current   []level
		next      = []level{{typ: t}}
		count     map[reflect.Type]int
		nextCount = map[reflect.Type]int{}
		visited   = map[reflect.Type]bool{}
	)
	for len(next) > 0 {
		current, next = next, nil
		count, nextCount = nextCount, map[reflect.Type]int{}
		for _, l := range current {
			if visited[l.typ] {
				continue
			}
			visited[l.typ] = true
			for i := range l.typ.NumField() {
				sf := l.typ.Field(i)
				ft := sf.Type
				if ft.Name() == "" && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if sf.Anonymous {
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				index := append(slices.Clone(l.index), i)
				if !sf.Anonymous || ft.Kind() != reflect.Struct || ft == timeType || ft == morType {
					fields = append(fields, field{name: sf.Name, index: index, typ: sf.Type})
					if count[l.typ] > 1 {
						// Two copies of the same embedded type at one
						// depth annihilate each other, as in encoding/json.
						fields = append(fields, fields[len(fields)-1])
					}
					continue
				}
				nextCount[ft]++
				if nextCount[ft] == 1 {
					next = append(next, level{typ: ft, index: index})
				}
			}
		}
	}

	sort.SliceStable(fields, func(i, j int) bool {
		if fields[i].name != fields[j].name {
			return fields[i].name < fields[j].name
		}
		return len(fields[i].index) < len(fields[j].index)
	})
	out := fields[:0]
	for i := 0; i < len(fields); {
		j := i + 1
		for j < len(fields) && fields[j].name == fields[i].name {
			j++
		}
		// fields[i] is the shallowest; it wins alone at its depth.
		if j-i == 1 || len(fields[i].index) < len(fields[i+1].index) {
			out = append(out, fields[i])
		}
		i = j
	}
	sort.Slice(out, func(i, j int) bool { return slices.Compare(out[i].index, out[j].index) < 0 })
	return out
}

// appendFloat writes f as encoding/json does; NaN and infinities, which
// JSON cannot hold, become null.
func appendFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hex = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// in encoding/json; HTML characters are left as they are.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			// Valid JSON, but not valid JavaScript: escaped like encoding/json.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
