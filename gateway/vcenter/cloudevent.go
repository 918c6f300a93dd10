package vcenter

import (
	"crypto/sha1" //nolint:gosec // UUIDv5 is defined on SHA-1
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// idTimeLayout formats CreatedTime in the CloudEvent id's name: always nine
// fractional digits, so one instant has one spelling.
const idTimeLayout = "2006-01-02T15:04:05.000000000Z"

// Converter turns vSphere events into the router's CloudEvents, in exactly
// the shape of the spec's example. It is safe for concurrent use.
type Converter struct {
	// Stream is the stream's name, set on every event (Event.Stream); the
	// stream sets it to its provider name, the entry's default name.
	Stream     string
	source     string
	sourceJSON []byte // source as a JSON string
	enc        *dataEncoder
	sizeHint   atomic.Int64 // size of the last event, to allocate once
}

// NewConverter returns a Converter for events from the vCenter at source
// (the configured URL, the CloudEvent's source).
func NewConverter(source string) *Converter {
	return &Converter{
		source:     source,
		sourceJSON: appendString(nil, source),
		enc:        newDataEncoder(),
	}
}

// urlNamespace is the UUID namespace for URLs (RFC 9562, appendix A),
// 6ba7b811-9dad-11d1-80b4-00c04fd430c8.
var urlNamespace = [16]byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// EventID is the CloudEvent id of the event with key and createdTime in the
// history of the vCenter with instanceUUID: the UUIDv5, in the URL
// namespace, of "<instanceUuid>/<key>/<createdTime>", createdTime in UTC
// with nine fractional digits. The key alone repeats after a restore or an
// int32 wrap; with the time it does not.
func EventID(instanceUUID string, key int32, createdTime time.Time) string {
	// Hashing namespace and name from one stack buffer keeps this free of
	// allocations but the returned string.
	var buf [256]byte
	b := append(buf[:0], urlNamespace[:]...)
	b = append(b, instanceUUID...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(key), 10)
	b = append(b, '/')
	b = appendTime(b, createdTime.UTC(), true)
	sum := sha1.Sum(b)          //nolint:gosec // UUIDv5 is defined on SHA-1
	sum[6] = sum[6]&0x0f | 0x50 // version 5
	sum[8] = sum[8]&0x3f | 0x80 // RFC 9562 variant
	var id [36]byte
	j := 0
	for i := range 16 {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			id[j] = '-'
			j++
		}
		id[j], id[j+1] = hex[sum[i]>>4], hex[sum[i]&0xf]
		j += 2
	}
	return string(id[:])
}

// appendTime appends t (in UTC) as RFC 3339: with exactly nine fractional
// digits when fixed (the id's form), else with trailing zeros trimmed as
// time.RFC3339Nano does. It is several times faster than time.AppendFormat,
// and the router formats three times per event.
func appendTime(b []byte, t time.Time, fixed bool) []byte {
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		if fixed {
			return t.AppendFormat(b, idTimeLayout)
		}
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	hour, minute, sec := t.Clock()
	b = append(b, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+int(month)/10), byte('0'+int(month)%10), '-', byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	ns := t.Nanosecond()
	if fixed || ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		if !fixed {
			for frac[n-1] == '0' {
				n--
			}
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z')
}

// Subject is the CloudEvent subject of ev: its vSphere class name
// ("VmPoweredOnEvent"), for EventEx and ExtendedEvent their eventTypeId,
// and for a type the SDK does not know the type name vCenter sent.
func Subject(ev types.BaseEvent) string {
	switch e := ev.(type) {
	case *types.EventEx:
		if e.EventTypeId != "" {
			return e.EventTypeId
		}
	case *types.ExtendedEvent:
		if e.EventTypeId != "" {
			return e.EventTypeId
		}
	case *UnknownEvent:
		return e.TypeName()
	}
	t := reflect.TypeOf(ev)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// Entity names the vSphere object ev is about as "Type:value": the VM, else
// the host, compute resource, datacenter, datastore, network or DVS, else
// (for an EventEx) its objectType and objectId; "" when it names none.
func Entity(ev types.BaseEvent) string {
	e := ev.GetEvent()
	ref := func(r types.ManagedObjectReference) string { return r.Type + ":" + r.Value }
	switch {
	case e.Vm != nil:
		return ref(e.Vm.Vm)
	case e.Host != nil:
		return ref(e.Host.Host)
	case e.ComputeResource != nil:
		return ref(e.ComputeResource.ComputeResource)
	case e.Datacenter != nil:
		return ref(e.Datacenter.Datacenter)
	case e.Ds != nil:
		return ref(e.Ds.Datastore)
	case e.Net != nil:
		return ref(e.Net.Network)
	case e.Dvs != nil:
		return ref(e.Dvs.Dvs)
	}
	if x, ok := ev.(*types.EventEx); ok && x.ObjectType != "" && x.ObjectId != "" {
		return x.ObjectType + ":" + x.ObjectId
	}
	return ""
}

// Convert builds the router's event for ev from the vCenter with
// instanceUUID. The JSON is the structured-mode CloudEvent with the members
// in the order of the spec's example.
func (c *Converter) Convert(instanceUUID string, ev types.BaseEvent) *gateway.Event {
	e := ev.GetEvent()
	created := e.CreatedTime.UTC()
	out := &gateway.Event{
		Stream:  c.Stream,
		ID:      EventID(instanceUUID, e.Key, created),
		Source:  c.source,
		Subject: Subject(ev),
		Time:    created,
		Key:     e.Key,
		Entity:  Entity(ev),
	}

	b := make([]byte, 0, c.sizeHint.Load()+64)
	b = append(b, `{"id":"`...)
	b = append(b, out.ID...)
	b = append(b, `","source":`...)
	b = append(b, c.sourceJSON...)
	b = append(b, `,"specversion":"1.0","type":"`+gateway.EventType+`","subject":`...)
	b = appendString(b, out.Subject)
	b = append(b, `,"time":"`...)
	b = appendTime(b, created, false)
	b = append(b, `","data":`...)
	b = c.enc.encode(b, ev)
	b = append(b, `,"datacontenttype":"application/json"}`...)
	c.sizeHint.Store(int64(len(b)))
	out.JSON = b
	return out
}
