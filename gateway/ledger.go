package gateway

import "sync"

// ledger tracks which events the dispatcher has finished with, in stream
// order, and derives the watermark: the position of the newest event such
// that it and every event before it are acknowledged (delivered to every
// destination, dropped by a filter, or dead-lettered). That, not the last
// event read, is what a checkpoint may record: resuming after it loses
// nothing.
type ledger struct {
	mu      sync.Mutex
	next    uint64 // sequence number of the next entry
	head    uint64 // sequence number of entries[0]
	entries []ledgerEntry
	mark    Position // the watermark
	hasMark bool
	newest  Position // the newest event registered
}

type ledgerEntry struct {
	pos       Position
	remaining int // destinations still to finish; 0 is done
}

// add registers an event that must finish remaining times (once per
// destination) and returns its sequence number. remaining 0 is done at once.
func (l *ledger) add(pos Position, remaining int) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	seq := l.next
	l.next++
	l.newest = pos
	l.entries = append(l.entries, ledgerEntry{pos: pos, remaining: remaining})
	l.advance()
	return seq
}

// done records that one destination finished with event seq.
func (l *ledger) done(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := seq - l.head
	if seq < l.head || i >= uint64(len(l.entries)) || l.entries[i].remaining == 0 {
		return // a bug elsewhere must not corrupt the watermark
	}
	l.entries[i].remaining--
	if i == 0 {
		l.advance()
	}
}

// advance moves the watermark over the finished prefix.
func (l *ledger) advance() {
	n := 0
	for n < len(l.entries) && l.entries[n].remaining == 0 {
		l.mark, l.hasMark = l.entries[n].pos, true
		n++
	}
	if n == 0 {
		return
	}
	l.head += uint64(n)
	// Re-slicing keeps the backing array; copy down once it is mostly
	// consumed so memory stays bounded by what is in flight.
	l.entries = l.entries[n:]
	if cap(l.entries) > 1024 && len(l.entries) < cap(l.entries)/4 {
		l.entries = append([]ledgerEntry(nil), l.entries...)
	}
}

// watermark returns the watermark, and false while no event has finished.
func (l *ledger) watermark() (Position, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mark, l.hasMark
}

// pending returns how many registered events are not finished, and the
// newest registered position.
func (l *ledger) pending() (int, Position) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries), l.newest
}
