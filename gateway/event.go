package gateway

import (
	"encoding/json"
	"fmt"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

// Position is a point in one vCenter's event history. vCenter orders its
// history by CreatedTime and then by Key; keys alone are not enough because
// they are int32 in vCenter's database, wrap to negative numbers on
// long-lived systems and restart at 1 after a restore.
type Position struct {
	Time time.Time `json:"createdTime"`
	Key  int32     `json:"key"`
}

// IsZero reports whether p is the zero position ("no position").
func (p Position) IsZero() bool { return p.Time.IsZero() && p.Key == 0 }

// Before reports whether p comes before q in vCenter's history.
func (p Position) Before(q Position) bool {
	if !p.Time.Equal(q.Time) {
		return p.Time.Before(q.Time)
	}
	return p.Key < q.Key
}

// EventType is the CloudEvent type of every event the router emits.
const EventType = "com.vmware.event.router/event"

// Event is one vCenter event on its way through the router: its CloudEvent
// attributes that the pipeline looks at, and the whole CloudEvent encoded
// once as structured JSON. Filters read and rewrite JSON, processors send
// it; carrying the encoded form avoids re-encoding the event per filter and
// per destination.
//
// Stream, Position and Entity belong to the vCenter event the CloudEvent came
// from and never change, even when a filter rewrites the event: they order
// deliveries and move the acknowledged watermark.
type Event struct {
	// Stream names the stream (the stream entry's name) the event was
	// read from. It selects the dispatchers' per-stream watermark and the
	// processors whose `streams` take the event; "" is the dispatcher's
	// default stream (DispatcherOptions.Stream).
	Stream string

	ID      string
	Source  string
	Subject string
	Time    time.Time // the vCenter event's CreatedTime
	Key     int32     // the vCenter event's Key

	// Entity names the vSphere object the event is about, as "Type:value"
	// of its managed object reference (VM first, then host, compute
	// resource, datacenter, datastore, network, DVS), or "" when the event
	// names none. Events with the same Entity reach a destination in order.
	Entity string

	// JSON is the whole CloudEvent in structured JSON mode, exactly the
	// shape of the spec's example.
	JSON []byte
}

// Position returns the event's place in its vCenter's history.
func (e *Event) Position() Position { return Position{Time: e.Time, Key: e.Key} }

// MaxEventSize caps a CloudEvent a filter may produce.
const MaxEventSize = 1 << 20

// ParseReplacement reads a CloudEvent a filter produced to replace orig. It
// must be valid structured-mode JSON with the required CloudEvent attributes
// (specversion, id, source, type) and at most MaxEventSize bytes. The
// result keeps orig's Stream, Position and Entity: a rewrite changes what is
// delivered, not where the event sits in vCenter's history.
func ParseReplacement(data []byte, orig *Event) (*Event, error) {
	if len(data) > MaxEventSize {
		return nil, fmt.Errorf("replacement event is %d bytes, over the %d byte limit", len(data), MaxEventSize)
	}
	var ce cloudevents.Event
	if err := json.Unmarshal(data, &ce); err != nil {
		return nil, fmt.Errorf("replacement event is not a valid CloudEvent: %w", err)
	}
	if err := ce.Validate(); err != nil {
		return nil, fmt.Errorf("replacement event is not a valid CloudEvent: %w", err)
	}
	out := &Event{
		Stream:  orig.Stream,
		ID:      ce.ID(),
		Source:  ce.Source(),
		Subject: ce.Subject(),
		Time:    orig.Time,
		Key:     orig.Key,
		Entity:  orig.Entity,
		JSON:    append([]byte(nil), data...),
	}
	return out, nil
}
