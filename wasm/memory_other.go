//go:build !linux && !darwin

package wasm

import "github.com/tetratelabs/wazero/experimental"

// guestMemory is wazero's default (Go slices) where mmap is unavailable.
var guestMemory experimental.MemoryAllocator
