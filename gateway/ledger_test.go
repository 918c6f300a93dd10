package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLedgerCap: at its cap the ledger makes add wait until the oldest
// entry finishes, or until ctx ends; the gauge follows what it holds.
func TestLedgerCap(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pending"})
	l := newLedger(3, g, nil)
	ctx := context.Background()
	pos := func(k int32) Position { return Position{Time: time.Unix(100, 0), Key: k} }
	held, err := l.add(ctx, pos(1), 1)
	if err != nil {
		t.Fatal(err)
	}
	for k := int32(2); k <= 3; k++ {
		if _, err := l.add(ctx, pos(k), 0); err != nil {
			t.Fatal(err)
		}
	}
	if v := promtest.ToFloat64(g); v != 3 {
		t.Fatalf("gauge %v, want 3", v)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := l.add(short, pos(4), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("add to a full ledger returned %v, want it to wait until its context ends", err)
	}
	if n, _ := l.pending(); n != 3 {
		t.Fatalf("a cancelled add registered an entry: pending %d", n)
	}
	added := make(chan error, 1)
	go func() {
		_, err := l.add(ctx, pos(4), 0)
		added <- err
	}()
	l.done(held)
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	if wm, ok := l.watermark(); !ok || wm.Key != 4 {
		t.Fatalf("watermark %+v %v, want key 4", wm, ok)
	}
	if v := promtest.ToFloat64(g); v != 0 {
		t.Fatalf("gauge %v, want 0", v)
	}
}

// TestLedgerOldest: the oldest unfinished entry, and since when it is the
// oldest, which is what /readyz judges a held stream by.
func TestLedgerOldest(t *testing.T) {
	l := newLedger(10, nil, nil)
	ctx := context.Background()
	pos := func(k int32) Position { return Position{Time: time.Unix(100, 0), Key: k} }
	if _, ok := l.oldest(); ok {
		t.Fatal("oldest of an empty ledger")
	}
	a, _ := l.add(ctx, pos(1), 1)
	b, _ := l.add(ctx, pos(2), 1)
	o, ok := l.oldest()
	if !ok || o.seq != a || o.pos.Key != 1 || o.held != 2 || o.full {
		t.Fatalf("oldest %+v %v", o, ok)
	}
	first := o.since
	l.done(b) // a later entry finishing leaves the oldest as it was
	if o, _ := l.oldest(); o.seq != a || !o.since.Equal(first) {
		t.Fatalf("oldest changed when a later entry finished: %+v", o)
	}
	c, _ := l.add(ctx, pos(3), 1)
	l.done(a)
	o, ok = l.oldest()
	if !ok || o.seq != c || o.held != 1 || o.since.Before(first) {
		t.Fatalf("oldest after the first finished: %+v %v", o, ok)
	}
}

// TestLedgerWatermarkNeverMovesBack: a late event (older position, handed on
// after newer ones) finishing last leaves the watermark where it was.
func TestLedgerWatermarkNeverMovesBack(t *testing.T) {
	l := newLedger(10, nil, nil)
	ctx := context.Background()
	at := func(sec int64) Position { return Position{Time: time.Unix(sec, 0), Key: int32(sec)} }
	if _, err := l.add(ctx, at(10), 0); err != nil {
		t.Fatal(err)
	}
	late, err := l.add(ctx, at(5), 1)
	if err != nil {
		t.Fatal(err)
	}
	l.done(late)
	if wm, ok := l.watermark(); !ok || wm != at(10) {
		t.Fatalf("watermark %v (ok %v) after a late event finished, want %v", wm, ok, at(10))
	}
}

// TestLedgerLag: the lag gauge is the newest position registered minus the
// watermark, kept as both move.
func TestLedgerLag(t *testing.T) {
	lag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "lag"})
	l := newLedger(10, nil, lag)
	ctx := context.Background()
	at := func(sec int64) Position { return Position{Time: time.Unix(sec, 0), Key: int32(sec)} }
	held, err := l.add(ctx, at(100), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.add(ctx, at(90), 0); err != nil { // nothing finished yet: no watermark
		t.Fatal(err)
	}
	l.done(held)
	for _, sec := range []int64{104, 110} {
		if _, err := l.add(ctx, at(sec), 1); err != nil {
			t.Fatal(err)
		}
	}
	if v := promtest.ToFloat64(lag); v != 10 {
		t.Fatalf("lag %v with the watermark at 100 and the newest at 110, want 10", v)
	}
}

// TestLedgerLateEventInFlight: while a late event (created before events
// already finished) is in flight, the watermark is just before it, so a
// crash then reads it again; once it finishes the watermark is back where
// it was.
func TestLedgerLateEventInFlight(t *testing.T) {
	l := newLedger(10, nil, nil)
	ctx := context.Background()
	at := func(sec int64, key int32) Position { return Position{Time: time.Unix(sec, 0), Key: key} }
	if _, err := l.add(ctx, at(10, 10), 0); err != nil {
		t.Fatal(err)
	}
	late, err := l.add(ctx, at(5, 5), 1)
	if err != nil {
		t.Fatal(err)
	}
	if wm, _ := l.watermark(); wm != at(5, 4) {
		t.Fatalf("watermark %v with a late event in flight, want just before it (%v)", wm, at(5, 4))
	}
	if _, newest := l.pending(); newest != at(10, 10) {
		t.Fatalf("newest %v after a late event, want it unchanged at %v", newest, at(10, 10))
	}
	l.done(late)
	if wm, _ := l.watermark(); wm != at(10, 10) {
		t.Fatalf("watermark %v after the late event finished, want %v", wm, at(10, 10))
	}
}
