// Package gatewaytest holds test helpers for the processors' packages that
// need the gateway's types: a dead-letter sink that keeps its letters and an
// event built as the vCenter stream builds one.
package gatewaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// Letters is a dead-letter sink that keeps what it is given.
type Letters struct {
	mu  sync.Mutex
	all []gateway.DeadLetter
}

// Write keeps dl.
func (s *Letters) Write(_ context.Context, dl gateway.DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, dl)
	return nil
}

// All returns the letters written so far.
func (s *Letters) All() []gateway.DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]gateway.DeadLetter(nil), s.all...)
}

// VMEvent builds an event as the stream does: a structured CloudEvent about
// the VM vm, encoded once, created at a time derived from key.
func VMEvent(t testing.TB, subject, vm string, key int32) *gateway.Event {
	t.Helper()
	e := event.New()
	e.SetID(fmt.Sprintf("id-%s-%d", vm, key))
	e.SetSource("https://vcenter.test/sdk")
	e.SetType(gateway.EventType)
	e.SetSubject(subject)
	created := time.Date(2026, 1, 2, 3, 4, 5, int(key), time.UTC)
	e.SetTime(created)
	if err := e.SetData(event.ApplicationJSON, map[string]any{"Key": key, "Vm": map[string]any{"Vm": map[string]string{"Type": "VirtualMachine", "Value": vm}}}); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return &gateway.Event{ID: e.ID(), Source: e.Source(), Subject: subject, Time: created, Key: key,
		Entity: "VirtualMachine:" + vm, JSON: data}
}
