//go:build linux || darwin

package wasm

import "testing"

func TestMappedMemory(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		m := &mappedMemory{max: 4 * 65536}
		if !mapped {
			m.tried = true // as if mmap had failed
		}
		b := m.Reallocate(65536)
		if len(b) != 65536 || m.mapped != mapped {
			t.Fatalf("mapped=%v: len %d, mapped %v", mapped, len(b), m.mapped)
		}
		b[65535] = 7
		b = m.Reallocate(3 * 65536)
		if len(b) != 3*65536 || b[65535] != 7 || b[65536] != 0 || b[3*65536-1] != 0 {
			t.Fatalf("mapped=%v: grown memory lost its contents or is not zero", mapped)
		}
		if mapped && m.Reallocate(5*65536) != nil {
			t.Fatal("grew past its maximum")
		}
		m.Free()
		if m.buf != nil {
			t.Fatal("Free kept the buffer")
		}
	}
}
