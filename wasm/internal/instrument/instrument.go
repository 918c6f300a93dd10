// Package instrument rewrites a WebAssembly module so that the host can stop
// it cheaply and see when it ran out of memory.
//
// wazero's own way to stop a running guest, WithCloseOnContextDone, compiles
// a call from native code into Go at every loop back-edge and starts a
// goroutine per call: ~3.5µs per call and guest loops 4-22x slower (wazero
// issue #2466). Those exits to Go are also what lets the Go scheduler
// preempt a guest and a garbage collection stop the world: without any, a
// guest in an endless loop freezes the whole process at the next GC.
//
// Rewrite keeps the exits but makes them rare. It adds a fuel counter
// global, decremented at every function entry and loop header:
//
//	global.get $fuel  i32.const 1  i32.sub  global.set $fuel
//	global.get $fuel  i32.eqz  if  call $slow  end
//
// and every FuelTicks ticks $slow refills it, exits to Go (memory.grow 0,
// which wazero's compiler implements as a call into Go) and traps if the
// interrupt flag, a global exported as InterruptExport, is set. The host's
// watchdog sets the flag when a call overruns its deadline; the guest traps
// within FuelTicks loop iterations or calls. Code without loops or calls
// runs for at most the length of one function body. Guest code may not
// read or write the added globals (Rewrite refuses a global index past the
// module's own).
//
// Rewrite also
//   - replaces every memory.grow with a call to an added function that
//     performs it and sets GrowFailedExport when it fails, so the host can
//     tell "out of memory" from other traps;
//   - moves the start function (if any) to the export StartExport, so that
//     the host runs it under its deadline after instantiation instead of
//     inside it;
//   - caps a declared memory maximum at the memory limit and refuses a
//     declared minimum over it, with a message that names the limit;
//   - drops custom sections other than "name" (DWARF offsets would no longer
//     match the rewritten code).
//
// Function, type and global indices of the original module are unchanged:
// everything is appended. The output is deterministic, so wazero's
// compilation cache still hits on the rewritten binary.
package instrument

import (
	"bytes"
	"errors"
	"fmt"
)

// Names of the exports Rewrite adds. Guests may not export names starting
// with ReservedPrefix.
const (
	ReservedPrefix   = "__evr_"
	InterruptExport  = "__evr_interrupt"
	GrowFailedExport = "__evr_grow_failed"
	StartExport      = "__evr_start"
)

// FuelTicks is how many function entries and loop iterations a guest runs
// between two exits to Go.
const FuelTicks = 4096

// PageSize is the WebAssembly page size.
const PageSize = 65536

// Options tune Rewrite.
type Options struct {
	// MemoryLimitPages caps the module's memory, in pages; 0 means the
	// WebAssembly maximum (65536 pages, 4 GiB).
	MemoryLimitPages uint32
}

// Output is a rewritten module.
type Output struct {
	Binary []byte
	// HasStart reports whether the module had a start function, now
	// exported as StartExport.
	HasStart bool
	// HasMemory reports whether the module defines or imports a memory.
	HasMemory bool
	// Imports lists the module's imports in order.
	Imports []Import
}

// ImportKind is what an import brings in.
type ImportKind byte

// Import kinds, as encoded in the binary.
const (
	ImportFunc   ImportKind = 0
	ImportTable  ImportKind = 1
	ImportMemory ImportKind = 2
	ImportGlobal ImportKind = 3
	ImportTag    ImportKind = 4
)

func (k ImportKind) String() string {
	switch k {
	case ImportFunc:
		return "function"
	case ImportTable:
		return "table"
	case ImportMemory:
		return "memory"
	case ImportGlobal:
		return "global"
	}
	return "tag"
}

// Import is one import of the module.
type Import struct {
	Module, Name string
	Kind         ImportKind
}

// Section ids.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// sectionRank orders non-custom sections as the binary format requires.
func sectionRank(id byte) int {
	switch id {
	case secTag:
		return 55 // between memory and global
	case secDataCount:
		return 95 // between element and code
	}
	return int(id) * 10
}

type section struct {
	id      byte
	payload []byte
}

// Rewrite instruments bin. Errors describe what is malformed; bin is not
// modified.
func Rewrite(bin []byte, opts Options) (out *Output, err error) {
	defer func() {
		// The decoder indexes into untrusted input: any slip is a malformed
		// module, never a crash of the router.
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("malformed module: %v", r)
		}
	}()
	if len(bin) < 8 || !bytes.Equal(bin[:4], []byte("\x00asm")) {
		return nil, errors.New("not a WebAssembly module (no \\0asm header)")
	}
	switch {
	case bytes.Equal(bin[4:8], []byte{1, 0, 0, 0}):
	case bin[6] != 0 || bin[7] != 0:
		return nil, errors.New("a WebAssembly component, not a core module: components are not supported")
	default:
		return nil, fmt.Errorf("unsupported WebAssembly binary version %d", bin[4])
	}

	var secs []section
	r := reader{b: bin, pos: 8}
	lastRank := 0
	for !r.done() {
		id := r.byte()
		size := r.u32()
		if uint64(r.pos)+uint64(size) > uint64(len(bin)) {
			return nil, fmt.Errorf("section %d: size %d past the end of the file", id, size)
		}
		payload := bin[r.pos : r.pos+int(size)]
		r.pos += int(size)
		if id > secTag {
			return nil, fmt.Errorf("unknown section id %d", id)
		}
		if id != secCustom {
			rank := sectionRank(id)
			if rank <= lastRank {
				return nil, fmt.Errorf("section %d out of order or repeated", id)
			}
			lastRank = rank
		}
		secs = append(secs, section{id, payload})
	}

	m := &module{opts: opts}
	for _, s := range secs {
		if err := m.scan(s); err != nil {
			return nil, err
		}
	}
	if m.codeCount != m.funcCount {
		return nil, fmt.Errorf("function section declares %d functions, code section has %d bodies", m.funcCount, m.codeCount)
	}
	m.origGlobals = m.importedGlobals + m.globalCount
	m.interruptGlobal = m.origGlobals
	m.growFailedGlobal = m.origGlobals + 1
	m.fuelGlobal = m.origGlobals + 2
	m.addGrow = m.hasMemory
	m.slowType = m.typeCount
	m.growType = m.typeCount + 1
	m.slowFunc = m.importedFuncs + m.funcCount
	m.growFunc = m.slowFunc + 1

	// The sections this rewrite changes or may have to create.
	needed := map[byte]bool{secType: true, secFunction: true, secGlobal: true, secExport: true, secCode: true}
	present := map[byte]bool{}
	for _, s := range secs {
		present[s.id] = true
	}

	w := make([]byte, 0, len(bin)+len(bin)/8+64)
	w = append(w, bin[:8]...)
	emitMissing := func(before int) error {
		for _, id := range []byte{secType, secFunction, secGlobal, secExport, secCode} {
			if needed[id] && !present[id] && sectionRank(id) < before {
				p, err := m.rewrite(section{id: id})
				if err != nil {
					return err
				}
				w = appendSection(w, id, p)
				present[id] = true
			}
		}
		return nil
	}
	for _, s := range secs {
		if s.id == secCustom {
			if !isNameSection(s.payload) {
				continue
			}
			w = appendSection(w, s.id, s.payload)
			continue
		}
		if err := emitMissing(sectionRank(s.id)); err != nil {
			return nil, err
		}
		if s.id == secStart {
			continue // moved to an export
		}
		p, err := m.rewrite(s)
		if err != nil {
			return nil, err
		}
		w = appendSection(w, s.id, p)
	}
	if err := emitMissing(1 << 30); err != nil {
		return nil, err
	}
	return &Output{Binary: w, HasStart: m.hasStart, HasMemory: m.hasMemory, Imports: m.imports}, nil
}

func isNameSection(p []byte) bool {
	r := reader{b: p}
	n := r.u32()
	return uint64(r.pos)+uint64(n) <= uint64(len(p)) && string(p[r.pos:r.pos+int(n)]) == "name"
}

func appendSection(w []byte, id byte, payload []byte) []byte {
	w = append(w, id)
	w = appendU32(w, uint32(len(payload)))
	return append(w, payload...)
}

type module struct {
	opts Options

	typeCount       uint32
	importedFuncs   uint32
	importedGlobals uint32
	funcCount       uint32
	globalCount     uint32
	codeCount       uint32
	hasMemory       bool
	hasStart        bool
	startFunc       uint32
	imports         []Import

	origGlobals      uint32 // globals the guest's code may use
	interruptGlobal  uint32
	growFailedGlobal uint32
	fuelGlobal       uint32
	addGrow          bool
	slowFunc         uint32
	slowType         uint32
	growFunc         uint32
	growType         uint32
}

// Limits that keep a hostile module from making the decoder or an instance
// allocate without bound. wazero sizes slices from the counts in a module
// before it reads their elements (a type count of 2^32-1 is a fatal,
// unrecoverable out-of-memory in the router), so scan checks every count
// against the bytes left before wazero decodes anything.
const (
	// MaxLocals caps the locals of one function, as V8 and wasmtime do.
	MaxLocals = 50000
	// MaxTableElements caps a table's size (8 bytes an element per
	// instance); a larger declared maximum is lowered to it.
	MaxTableElements = 1 << 20
)

// scan walks the structure of section s, checks every count against the
// bytes left, and records what the rewrite needs to know.
func (m *module) scan(s section) error {
	r := reader{b: s.payload}
	switch s.id {
	case secCustom:
		if isNameSection(s.payload) {
			r.name()
			scanNames(&r)
		}
		return nil
	case secType:
		m.typeCount = r.count()
		for i := uint32(0); i < m.typeCount; i++ {
			if form := r.byte(); form != 0x60 {
				return fmt.Errorf("type %d: unknown form %#x", i, form)
			}
			r.skip(int(r.count())) // params
			r.skip(int(r.count())) // results
		}
	case secImport:
		n := r.count()
		for i := uint32(0); i < n; i++ {
			mod := r.name()
			name := r.name()
			kind := r.byte()
			m.imports = append(m.imports, Import{Module: string(mod), Name: string(name), Kind: ImportKind(kind)})
			switch kind {
			case 0x00:
				r.u32()
				m.importedFuncs++
			case 0x01:
				r.byte()
				r.limits()
			case 0x02:
				r.limits()
				m.hasMemory = true
			case 0x03:
				r.byte()
				r.byte()
				m.importedGlobals++
			case 0x04:
				r.byte()
				r.u32()
			default:
				return fmt.Errorf("import %d: unknown kind %d", i, kind)
			}
		}
	case secFunction:
		m.funcCount = r.count()
		for i := uint32(0); i < m.funcCount; i++ {
			r.u32()
		}
	case secTable:
		n := r.count()
		for i := uint32(0); i < n; i++ {
			r.byte()
			flags := r.byte()
			if min := r.u32(); min > MaxTableElements {
				return fmt.Errorf("table %d: declares %d elements, more than the %d the router allows", i, min, MaxTableElements)
			}
			if flags&1 != 0 {
				r.u32()
			}
		}
	case secMemory:
		n := r.count()
		if n > 0 {
			m.hasMemory = true
		}
		for i := uint32(0); i < n; i++ {
			r.limits()
		}
	case secGlobal:
		m.globalCount = r.count()
		for i := uint32(0); i < m.globalCount; i++ {
			r.byte()
			r.byte()
			if err := r.constExpr(); err != nil {
				return fmt.Errorf("global %d: %w", i, err)
			}
		}
	case secExport:
		n := r.count()
		for i := uint32(0); i < n; i++ {
			r.name()
			r.byte()
			r.u32()
		}
	case secStart:
		m.hasStart = true
		m.startFunc = r.u32()
	case secElement:
		n := r.count()
		for i := uint32(0); i < n; i++ {
			if err := r.elementSegment(); err != nil {
				return fmt.Errorf("element segment %d: %w", i, err)
			}
		}
	case secCode:
		m.codeCount = r.count()
		for i := uint32(0); i < m.codeCount; i++ {
			size := r.count()
			end := r.pos + int(size)
			var locals uint64
			nl := r.count()
			for j := uint32(0); j < nl; j++ {
				locals += uint64(r.u32())
				r.byte()
			}
			if locals > MaxLocals {
				return fmt.Errorf("function %d: declares %d locals, more than %d", m.importedFuncs+i, locals, MaxLocals)
			}
			if r.pos > end {
				return fmt.Errorf("function %d: locals past the end of its body", m.importedFuncs+i)
			}
			r.pos = end
		}
	case secData:
		n := r.count()
		for i := uint32(0); i < n; i++ {
			switch flags := r.u32(); flags {
			case 0:
				if err := r.constExpr(); err != nil {
					return fmt.Errorf("data segment %d: %w", i, err)
				}
			case 1:
			case 2:
				r.u32()
				if err := r.constExpr(); err != nil {
					return fmt.Errorf("data segment %d: %w", i, err)
				}
			default:
				return fmt.Errorf("data segment %d: unknown flags %d", i, flags)
			}
			r.skip(int(r.count()))
		}
	case secDataCount:
		if n := r.u32(); n > 1<<24 {
			return fmt.Errorf("data count %d is implausibly large", n)
		}
	}
	if !r.done() && s.id != secStart && s.id != secDataCount {
		return fmt.Errorf("section %d: %d bytes left over", s.id, len(r.b)-r.pos)
	}
	return nil
}

// scanNames checks the counts of the "name" custom section, which wazero
// decodes even when custom sections are off.
func scanNames(r *reader) {
	for !r.done() {
		id := r.byte()
		size := r.count()
		end := r.pos + int(size)
		sub := reader{b: r.b[:end], pos: r.pos}
		switch id {
		case 1: // function names: vec(idx name)
			n := sub.count()
			for i := uint32(0); i < n; i++ {
				sub.u32()
				sub.name()
			}
		case 2: // local names: vec(idx vec(idx name))
			n := sub.count()
			for i := uint32(0); i < n; i++ {
				sub.u32()
				k := sub.count()
				for j := uint32(0); j < k; j++ {
					sub.u32()
					sub.name()
				}
			}
		}
		r.pos = end
	}
}

// elementSegment skips one element segment (the eight encodings of the
// bulk-memory and reference-types proposals).
func (r *reader) elementSegment() error {
	flags := r.u32()
	if flags > 7 {
		return fmt.Errorf("unknown flags %d", flags)
	}
	if flags&1 == 0 { // active
		if flags&2 != 0 {
			r.u32() // table index
		}
		if err := r.constExpr(); err != nil {
			return err
		}
	}
	if flags&3 != 0 {
		r.byte() // element kind or reference type
	}
	n := r.count()
	for i := uint32(0); i < n; i++ {
		if flags&4 == 0 {
			r.u32()
		} else if err := r.constExpr(); err != nil {
			return err
		}
	}
	return nil
}

// constExpr skips a constant expression up to and including its end.
func (r *reader) constExpr() error {
	for i := 0; i < 64; i++ {
		op := r.byte()
		if op == 0x0b {
			return nil
		}
		switch immKinds[op] {
		case immNone:
		case immLEB:
			r.leb(10)
		case immF32:
			r.skip(4)
		case immF64:
			r.skip(8)
		case immByte:
			r.byte()
		case immComplex:
			if err := r.skipImmediates(op); err != nil {
				return err
			}
		default:
			return fmt.Errorf("instruction %#x in a constant expression", op)
		}
	}
	return errors.New("constant expression too long")
}

// rewrite returns the new payload of section s (s.payload is nil for a
// section the module lacks).
func (m *module) rewrite(s section) ([]byte, error) {
	r := reader{b: s.payload}
	switch s.id {
	case secType:
		var n uint32
		if s.payload != nil {
			n = r.u32()
		}
		w := appendU32(nil, n+2)
		w = append(w, r.rest()...)
		return append(w, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f), nil // () -> (); (i32) -> i32
	case secFunction:
		var n uint32
		if s.payload != nil {
			n = r.u32()
		}
		add := uint32(1)
		if m.addGrow {
			add++
		}
		w := appendU32(nil, n+add)
		w = append(w, r.rest()...)
		w = appendU32(w, m.slowType)
		if m.addGrow {
			w = appendU32(w, m.growType)
		}
		return w, nil
	case secMemory:
		return m.rewriteMemory(r)
	case secTable:
		return rewriteTables(r), nil
	case secGlobal:
		var n uint32
		if s.payload != nil {
			n = r.u32()
		}
		w := appendU32(nil, n+3)
		w = append(w, r.rest()...)
		// (mut i32) interrupt = 0, grow_failed = 0, fuel = FuelTicks.
		w = append(w, 0x7f, 1, 0x41, 0, 0x0b, 0x7f, 1, 0x41, 0, 0x0b, 0x7f, 1, 0x41)
		w = appendS32(w, FuelTicks)
		return append(w, 0x0b), nil
	case secExport:
		var n uint32
		if s.payload != nil {
			n = r.u32()
			for i := uint32(0); i < n; i++ {
				name := r.name()
				r.byte()
				r.u32()
				if len(name) >= len(ReservedPrefix) && string(name[:len(ReservedPrefix)]) == ReservedPrefix {
					return nil, fmt.Errorf("exports %q: names starting with %q are reserved for the router", name, ReservedPrefix)
				}
			}
			r = reader{b: s.payload}
			r.u32()
		}
		add := uint32(2)
		if m.hasStart {
			add++
		}
		w := appendU32(nil, n+add)
		w = append(w, r.rest()...)
		w = appendExport(w, InterruptExport, 0x03, m.interruptGlobal)
		w = appendExport(w, GrowFailedExport, 0x03, m.growFailedGlobal)
		if m.hasStart {
			w = appendExport(w, StartExport, 0x00, m.startFunc)
		}
		return w, nil
	case secCode:
		return m.rewriteCode(s.payload)
	}
	return s.payload, nil
}

func appendExport(w []byte, name string, kind byte, idx uint32) []byte {
	w = appendU32(w, uint32(len(name)))
	w = append(w, name...)
	w = append(w, kind)
	return appendU32(w, idx)
}

func (m *module) rewriteMemory(r reader) ([]byte, error) {
	limit := m.opts.MemoryLimitPages
	if limit == 0 {
		limit = 65536
	}
	n := r.u32()
	w := appendU32(nil, n)
	for i := uint32(0); i < n; i++ {
		flags := r.byte()
		if flags&^0x03 != 0 {
			return nil, fmt.Errorf("memory %d: unsupported limits flags %#x (memory64 and custom page sizes are not supported)", i, flags)
		}
		min := r.u32()
		var max uint32
		hasMax := flags&1 != 0
		if hasMax {
			max = r.u32()
		}
		if min > limit {
			return nil, fmt.Errorf("declares an initial memory of %d pages (%s), over the memory limit of %d pages (%s): raise memory_limit",
				min, pagesString(min), limit, pagesString(limit))
		}
		if hasMax && max > limit {
			max = limit
		}
		w = append(w, flags)
		w = appendU32(w, min)
		if hasMax {
			w = appendU32(w, max)
		}
	}
	return w, nil
}

// rewriteTables lowers every table's maximum to MaxTableElements (scan has
// refused a larger minimum), so that table.grow cannot take more memory.
func rewriteTables(r reader) []byte {
	n := r.u32()
	w := appendU32(nil, n)
	for i := uint32(0); i < n; i++ {
		w = append(w, r.byte()) // reference type
		flags := r.byte()
		lo := r.u32()
		hi := uint32(MaxTableElements)
		if flags&1 != 0 {
			hi = min(r.u32(), MaxTableElements)
		}
		w = append(w, flags|1)
		w = appendU32(w, lo)
		w = appendU32(w, hi)
	}
	return w
}

func pagesString(pages uint32) string {
	b := uint64(pages) * PageSize
	switch {
	case b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b > 1<<20:
		return fmt.Sprintf("%.2fMiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%dKiB", b>>10)
}

func (m *module) rewriteCode(payload []byte) ([]byte, error) {
	r := reader{b: payload}
	var n uint32
	if payload != nil {
		n = r.u32()
	}
	total := n + 1
	if m.addGrow {
		total++
	}
	w := make([]byte, 0, len(payload)+len(payload)/8+64)
	w = appendU32(w, total)
	var body []byte
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		if uint64(r.pos)+uint64(size) > uint64(len(payload)) {
			return nil, fmt.Errorf("function %d: body size %d past the end of the code section", m.importedFuncs+i, size)
		}
		var err error
		body, err = m.rewriteBody(body[:0], payload[r.pos:r.pos+int(size)])
		if err != nil {
			return nil, fmt.Errorf("function %d: %w", m.importedFuncs+i, err)
		}
		r.pos += int(size)
		w = appendU32(w, uint32(len(body)))
		w = append(w, body...)
	}
	// $slow: refill the fuel, exit to Go, then honour the interrupt flag.
	g := []byte{0, 0x41} // no locals; i32.const
	g = appendS32(g, FuelTicks)
	g = append(g, 0x24) // global.set
	g = appendU32(g, m.fuelGlobal)
	if m.hasMemory {
		// memory.grow is an exit from native code to Go in wazero's
		// compiler: a point where the Go scheduler can preempt the
		// goroutine and a garbage collection can stop the world.
		g = append(g, 0x41, 0, 0x40, 0, 0x1a) // i32.const 0; memory.grow 0; drop
	}
	g = append(g, 0x23) // global.get
	g = appendU32(g, m.interruptGlobal)
	g = append(g, 0x04, 0x40, 0x00, 0x0b, 0x0b) // if unreachable end; end
	w = appendU32(w, uint32(len(g)))
	w = append(w, g...)
	if m.addGrow {
		g := []byte{
			1, 1, 0x7f, // one local i32
			0x20, 0, // local.get 0
			0x40, 0, // memory.grow 0
			0x22, 1, // local.tee 1
			0x41, 0x7f, // i32.const -1
			0x46,       // i32.eq
			0x04, 0x40, // if
			0x41, 1, // i32.const 1
			0x24, // global.set
		}
		g = appendU32(g, m.growFailedGlobal)
		g = append(g, 0x0b, 0x20, 1, 0x0b) // end; local.get 1; end
		w = appendU32(w, uint32(len(g)))
		w = append(w, g...)
	}
	return w, nil
}

// appendCheck appends the tick at a function entry or loop header:
//
//	global.get $fuel  i32.const 1  i32.sub  global.set $fuel
//	global.get $fuel  i32.eqz  if  call $slow  end
func (m *module) appendCheck(w []byte) []byte {
	w = append(w, 0x23)
	w = appendU32(w, m.fuelGlobal)
	w = append(w, 0x41, 1, 0x6b, 0x24)
	w = appendU32(w, m.fuelGlobal)
	w = append(w, 0x23)
	w = appendU32(w, m.fuelGlobal)
	w = append(w, 0x45, 0x04, 0x40, 0x10)
	w = appendU32(w, m.slowFunc)
	return append(w, 0x0b)
}

func appendS32(w []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(w, c)
		}
		w = append(w, c|0x80)
	}
}

// Immediate kinds of one-byte opcodes, for the rewriter's hot loop.
const (
	immBad     = iota // unknown opcode
	immNone           // no immediate
	immLEB            // one LEB128 (also block types: 0x40, a value type or an s33 index)
	immLEB2           // two LEB128s (memarg, call_indirect)
	immF32            // 4 bytes
	immF64            // 8 bytes
	immByte           // one byte (ref.null)
	immComplex        // br_table, select t*, 0xfc, 0xfd, 0xfe: decoded by skipImmediates
)

var immKinds = func() (k [256]byte) {
	set := func(from, to int, kind byte) {
		for op := from; op <= to; op++ {
			k[op] = kind
		}
	}
	set(0x00, 0x01, immNone) // unreachable, nop
	set(0x02, 0x04, immLEB)  // block, loop, if
	k[0x05], k[0x0b], k[0x0f] = immNone, immNone, immNone
	set(0x0c, 0x0d, immLEB) // br, br_if
	k[0x0e] = immComplex    // br_table
	k[0x10], k[0x12] = immLEB, immLEB
	k[0x11], k[0x13] = immLEB2, immLEB2
	set(0x1a, 0x1b, immNone)
	k[0x1c] = immComplex
	set(0x20, 0x26, immLEB)
	set(0x28, 0x3e, immLEB2)
	set(0x3f, 0x42, immLEB) // memory.size, memory.grow, i32.const, i64.const
	k[0x43], k[0x44] = immF32, immF64
	set(0x45, 0xc4, immNone)
	k[0xd0], k[0xd1], k[0xd2] = immByte, immNone, immLEB
	k[0xfc], k[0xfd], k[0xfe] = immComplex, immComplex, immComplex
	return k
}()

// rewriteBody copies one function body into w, inserting the interrupt
// check at entry and after every loop header, and replacing memory.grow.
// It is the hot loop of loading a 2 MB Go module, hence the inlined
// decoding of the common instructions.
func (m *module) rewriteBody(w, body []byte) ([]byte, error) {
	r := reader{b: body}
	nlocals := r.u32()
	for i := uint32(0); i < nlocals; i++ {
		r.u32()
		r.byte()
	}
	w = append(w, body[:r.pos]...)
	w = m.appendCheck(w)
	last := r.pos
	pos := r.pos
	n := len(body)
	for pos < n {
		op := body[pos]
		pos++
		switch immKinds[op] {
		case immNone:
		case immLEB:
			start := pos
			for pos < n && body[pos]&0x80 != 0 {
				pos++
			}
			pos++
			if pos-start > 10 {
				return nil, fmt.Errorf("LEB128 integer too long at offset %d", start)
			}
			switch {
			case op == 0x23 || op == 0x24: // global.get/set: not the router's globals
				var idx uint32
				for k, c := range body[start:min(pos, n)] {
					idx |= uint32(c&0x7f) << (7 * k)
				}
				if idx >= m.origGlobals {
					return nil, fmt.Errorf("global %d does not exist", idx)
				}
			case op == 0x03: // loop: check after its block type
				if pos > n {
					return nil, errors.New("unexpected end of data")
				}
				w = append(w, body[last:pos]...)
				w = m.appendCheck(w)
				last = pos
			case op == 0x40 && m.addGrow: // memory.grow 0 -> call $grow
				if pos-start != 1 || body[start] != 0 {
					return nil, errors.New("memory.grow of a memory other than 0: multiple memories are not supported")
				}
				w = append(w, body[last:start-1]...)
				w = append(w, 0x10)
				w = appendU32(w, m.growFunc)
				last = pos
			}
		case immLEB2:
			for k := 0; k < 2; k++ {
				for pos < n && body[pos]&0x80 != 0 {
					pos++
				}
				pos++
			}
		case immF32:
			pos += 4
		case immF64:
			pos += 8
		case immByte:
			pos++
		case immComplex:
			r.pos = pos
			if err := r.skipImmediates(op); err != nil {
				return nil, err
			}
			pos = r.pos
		default:
			return nil, fmt.Errorf("unknown instruction %#x at offset %d", op, pos-1)
		}
	}
	if pos > n {
		return nil, errors.New("unexpected end of data")
	}
	return append(w, body[last:]...), nil
}

// skipImmediates advances past the immediates of op, whose byte was read.
func (r *reader) skipImmediates(op byte) error {
	switch op {
	case 0x0e: // br_table
		n := r.u32()
		for i := uint32(0); i <= n; i++ {
			r.u32()
		}
	case 0x1c: // select t*
		n := r.u32()
		for i := uint32(0); i < n; i++ {
			r.byte()
		}
	case 0xfc:
		return r.skipFC()
	case 0xfd:
		return r.skipSIMD()
	case 0xfe:
		return errors.New("threads (atomic) instructions are not supported")
	default:
		return fmt.Errorf("unknown instruction %#x at offset %d", op, r.pos-1)
	}
	return nil
}

func (r *reader) skipFC() error {
	switch sub := r.u32(); {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init data mem
		r.u32()
		r.u32()
	case sub == 9, sub == 13, sub == 15, sub == 16, sub == 17: // data.drop, elem.drop, table.grow/size/fill
		r.u32()
	case sub == 10: // memory.copy
		r.u32()
		r.u32()
	case sub == 11: // memory.fill
		r.u32()
	case sub == 12, sub == 14: // table.init, table.copy
		r.u32()
		r.u32()
	default:
		return fmt.Errorf("unknown instruction 0xfc %d", sub)
	}
	return nil
}

func (r *reader) skipSIMD() error {
	switch sub := r.u32(); {
	case sub <= 11, sub == 92, sub == 93: // v128 loads/stores
		r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.skip(16)
	case sub >= 21 && sub <= 34: // extract/replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load/store lane
		r.memarg()
		r.byte()
	case sub <= 255:
	default:
		return fmt.Errorf("unknown instruction 0xfd %d (relaxed SIMD is not supported)", sub)
	}
	return nil
}

// reader decodes the binary format. Its methods panic on truncated input;
// Rewrite recovers and reports the module as malformed.
type reader struct {
	b   []byte
	pos int
}

func (r *reader) done() bool { return r.pos >= len(r.b) }

func (r *reader) rest() []byte { return r.b[r.pos:] }

func (r *reader) byte() byte {
	if r.pos >= len(r.b) {
		panic("unexpected end of data")
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) skip(n int) {
	if r.pos+n > len(r.b) {
		panic("unexpected end of data")
	}
	r.pos += n
}

// u32 reads an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() uint32 {
	var v uint32
	for shift := uint(0); shift < 35; shift += 7 {
		c := r.byte()
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	panic("LEB128 integer too long")
}

// count reads a vector length or byte size and checks that it does not
// exceed the bytes left (every element takes at least one byte).
func (r *reader) count() uint32 {
	n := r.u32()
	if uint64(n) > uint64(len(r.b)-r.pos) {
		panic(fmt.Sprintf("count %d exceeds the %d bytes left", n, len(r.b)-r.pos))
	}
	return n
}

// leb skips a LEB128 of at most max bytes.
func (r *reader) leb(max int) {
	for i := 0; i < max; i++ {
		if r.byte()&0x80 == 0 {
			return
		}
	}
	panic("LEB128 integer too long")
}

func (r *reader) name() []byte {
	n := r.count()
	start := r.pos
	r.skip(int(n))
	return r.b[start:r.pos]
}

func (r *reader) limits() {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

func (r *reader) memarg() {
	r.u32() // align (bit 6 would announce a memory index: multi-memory is not enabled)
	r.u32() // offset
}

func appendU32(w []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			w = append(w, c|0x80)
			continue
		}
		return append(w, c)
	}
}
