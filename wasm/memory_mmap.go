//go:build linux || darwin

package wasm

import (
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// guestMemory backs each guest's linear memory with its own anonymous
// mapping of memory_limit bytes, outside the Go heap: growing it never
// copies (wazero's default appends to a Go slice, briefly holding the old
// and the new buffer), pages cost RSS only once touched, and an instance
// that is closed (replaced after a failure, or at reload) returns its
// memory to the system at once instead of at some later garbage
// collection. This is what keeps the router's peak RSS at the sum of
// pool_size x memory_limit plus a constant, with guests failing on every
// event.
//
// The host reads guest memory only during a call and copies what it keeps,
// and instances are closed only between calls, so nothing touches a
// mapping after it is unmapped.
var guestMemory experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(
	func(_, maxBytes uint64) experimental.LinearMemory { return &mappedMemory{max: maxBytes} })

type mappedMemory struct {
	max    uint64
	buf    []byte
	mapped bool
	tried  bool
}

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if !m.tried {
		m.tried = true
		b, err := syscall.Mmap(-1, 0, int(max(m.max, size, 1)),
			syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
		if err == nil {
			m.buf, m.mapped = b, true
		}
	}
	if !m.mapped {
		// No mapping (out of address space): a Go buffer, grown by
		// copying, as wazero does by default.
		if size > uint64(cap(m.buf)) {
			b := make([]byte, size)
			copy(b, m.buf)
			m.buf = b
		}
		return m.buf[:size:size]
	}
	if size > uint64(len(m.buf)) {
		return nil
	}
	// Pages past the old size were never touched (memories only grow):
	// they read as zero, as a new WebAssembly page must.
	return m.buf[:size:size]
}

func (m *mappedMemory) Free() {
	if m.mapped {
		_ = syscall.Munmap(m.buf)
	}
	m.buf, m.mapped = nil, false
}
