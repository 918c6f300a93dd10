package vcenter

import (
	"context"
	"reflect"
	"strings"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// UnknownEvent is a vCenter event whose type this SDK does not know (an
// event class of a newer vCenter). govmomi would decode it as a nil entry,
// losing even its key and time; instead the fields every event shares
// decode into Event and the type name vCenter sent is kept, so the stream
// hands it on with that name as subject rather than stalling on it or
// dropping it.
type UnknownEvent struct {
	types.Event

	typeName string
}

// TypeName is the vSphere type name vCenter sent (xsi:type).
func (e *UnknownEvent) TypeName() string { return e.typeName }

// eventElem decodes one element that holds an event: with its xsi:type when
// the SDK knows it, else as an UnknownEvent. Deciding per element, where the
// element is known to be an event, leaves every other unknown type in a
// response on the SDK's own path.
type eventElem struct {
	ev types.BaseEvent
}

func (e *eventElem) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	name := ""
	for _, a := range start.Attr {
		if a.Name.Local == "type" && (a.Name.Space == "xsi" || strings.HasSuffix(a.Name.Space, "XMLSchema-instance")) {
			name = a.Value
			break
		}
	}
	if d.TypeFunc != nil && name != "" {
		if t, ok := d.TypeFunc(name); ok {
			v := reflect.New(t)
			if ev, ok := v.Interface().(types.BaseEvent); ok {
				if err := d.DecodeElement(v.Interface(), &start); err != nil {
					return err
				}
				e.ev = ev
				return nil
			}
		}
	}
	u := &UnknownEvent{typeName: localName(name)}
	if u.typeName == "" {
		u.typeName = "Event"
	}
	if err := d.DecodeElement(&u.Event, &start); err != nil {
		return err
	}
	e.ev = u
	return nil
}

func localName(s string) string {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func eventsOf(elems []eventElem) []types.BaseEvent {
	out := make([]types.BaseEvent, len(elems))
	for i := range elems {
		out[i] = elems[i].ev
	}
	return out
}

// arrayOfEvent replaces types.ArrayOfEvent, the value of a latest page in
// a property update, in the stream's responses.
type arrayOfEvent struct {
	Event []eventElem `xml:"Event"`
}

// typeFunc is the stream client's type registry: known (the SDK's), with
// ArrayOfEvent decoded element by element.
func typeFunc(known types.Func) types.Func {
	arrayType := reflect.TypeFor[arrayOfEvent]()
	return func(name string) (reflect.Type, bool) {
		if localName(name) == "ArrayOfEvent" {
			return arrayType, true
		}
		return known(name)
	}
}

// readNextEventsBody is methods.ReadNextEventsBody with eventElem results.
type readNextEventsBody struct {
	Req    *types.ReadNextEvents   `xml:"urn:vim25 ReadNextEvents,omitempty"`
	Res    *readNextEventsResponse `xml:"ReadNextEventsResponse,omitempty"`
	Fault_ *soap.Fault             `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"` //nolint:revive // the SDK's name
}

func (b *readNextEventsBody) Fault() *soap.Fault { return b.Fault_ }

type readNextEventsResponse struct {
	Returnval []eventElem `xml:"returnval,omitempty"`
}

// readNextEvents is methods.ReadNextEvents decoding events with eventElem.
func readNextEvents(ctx context.Context, c *vim25.Client, capt *capture, collector types.ManagedObjectReference, maxCount int32) ([]types.BaseEvent, error) {
	req := readNextEventsBody{Req: &types.ReadNextEvents{This: collector, MaxCount: maxCount}}
	var res readNextEventsBody
	err := soapCall(ctx, c, capt, nil, &req, &res, func(body []byte, tf types.Func) error {
		r := new(readNextEventsResponse)
		if err := decodeBody(body, tf, "ReadNextEventsResponse", r); err != nil {
			return err
		}
		res.Res = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.Res == nil {
		return nil, nil
	}
	return eventsOf(res.Res.Returnval), nil
}
