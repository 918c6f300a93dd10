// Package instrument rewrites a WebAssembly module so that the host can stop
// it cheaply, bound the memory it makes the host spend, and see why it
// failed.
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
// runs for at most the length of one function body. Bulk memory and table
// instructions (memory.fill/copy/init, table.fill/copy/init/grow) are
// checkpoints too: each charges fuel by its length and checks the interrupt
// flag before it runs.
//
// Guest code may not read or write the added globals: Rewrite refuses a
// global index past the module's own. That check is only as good as the
// decoder's agreement with wazero's on where each instruction starts, so
// the decoder mirrors wazero v1.11.0's byte for byte (see appendBody) and
// FuzzRewrite checks the agreement.
//
// Rewrite also
//   - charges every function entry by its frame size (parameters, locals and
//     FrameSlots) against a call-stack budget of StackBudget slots, released
//     on every way out of the function, and traps when the budget runs out,
//     after setting StackExhaustedExport to 1, long before wazero's own
//     stack limit (which lets a guest make the host allocate ~80 MB per
//     call);
//   - replaces every memory.grow with a call to an added function that
//     performs it and sets GrowFailedExport when it fails, so the host can
//     tell "out of memory" from other traps;
//   - moves the start function (if any) to the export StartExport, so that
//     the host runs it under its deadline after instantiation instead of
//     inside it;
//   - caps a declared memory maximum at the memory limit and refuses a
//     declared minimum over it, with a message that names the limit;
//   - caps the elements of all tables together at MaxTableElements;
//   - bounds every section's size and counts (see the Max constants), the
//     "name" section's sub-sections included;
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
	"unicode/utf8"
)

// Names of the exports Rewrite adds. Guests may not export names starting
// with ReservedPrefix. All are mutable i32 globals the host may reset
// before a call.
const (
	ReservedPrefix   = "__evr_"
	InterruptExport  = "__evr_interrupt"
	GrowFailedExport = "__evr_grow_failed"
	// StackExhaustedExport is set to 1 just before the guest traps because
	// its call-stack budget ran out.
	StackExhaustedExport = "__evr_stack_exhausted"
	StartExport          = "__evr_start"
)

// FuelTicks is how many function entries and loop iterations a guest runs
// between two exits to Go.
const FuelTicks = 4096

// BulkTickBytes is how many bytes (or table elements) of a bulk memory or
// table instruction cost one fuel tick.
const (
	BulkTickBytes = 1 << bulkTickShift
	bulkTickShift = 12
)

// The call-stack budget. A frame costs its parameters and locals, in 8-byte
// slots (a v128 takes two), plus FrameSlots for its operand stack, spills
// and the return address. StackBudget slots let a function with one
// parameter recurse 15,420 deep: wazero then has allocated 2.6 MiB of stack
// (TestStackBudgetBoundsHostMemory; the process's peak RSS grew 2.1 MB),
// where without the budget the same recursion runs to wazero's own limit
// and allocates 162 MiB (peak RSS +166 MB).
const (
	FrameSlots  = 16
	StackBudget = 1 << 18
)

// PageSize is the WebAssembly page size.
const PageSize = 65536

// Limits that keep a hostile module from making the decoder or an instance
// allocate without bound. wazero sizes slices from the counts in a module
// before it reads their elements (a type count of 2^32-1 is a fatal,
// unrecoverable out-of-memory in the router), so scan checks every count
// against the bytes left and against these limits (V8's, where it has one)
// before wazero decodes anything.
const (
	// MaxLocals caps the locals of one function, as V8 and wasmtime do.
	MaxLocals = 50000
	// MaxTableElements caps the elements of all tables together (8 bytes
	// an element per instance); declared maxima are lowered to share it.
	MaxTableElements = 1 << 20
	// MaxTables caps the number of tables.
	MaxTables = 100
	// MaxTypes, MaxFunctions, MaxGlobals, MaxImports, MaxExports and
	// MaxSegments cap the counts of the sections that declare them.
	MaxTypes     = 1_000_000
	MaxFunctions = 1_000_000
	MaxGlobals   = 1_000_000
	MaxImports   = 100_000
	MaxExports   = 100_000
	MaxSegments  = 100_000
	// MaxParams caps the parameters, and the results, of a function type.
	MaxParams = 1000
	// MaxFunctionSize caps one function body, in bytes.
	MaxFunctionSize = 7_654_321
	// MaxSectionSize caps any section, in bytes.
	MaxSectionSize = 64 << 20
	// MaxNameSectionSize caps the "name" custom section, in bytes, and
	// MaxNameLength any name in it (and any import or export name).
	MaxNameSectionSize = 16 << 20
	MaxNameLength      = 64 << 10
)

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

var sectionNames = [...]string{"custom", "type", "import", "function", "table", "memory", "global",
	"export", "start", "element", "code", "data", "data count", "tag"}

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

// Rewrite instruments bin. Errors say what is malformed or over a limit;
// bin is not modified.
func Rewrite(bin []byte, opts Options) (out *Output, err error) {
	defer func() {
		// The decoder indexes into untrusted input: any slip is a malformed
		// module, never a crash of the router.
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("not a valid WebAssembly module: %v", r)
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
	names := 0
	for !r.done() {
		id := r.byte()
		size := r.u32()
		if id > secTag {
			return nil, fmt.Errorf("unknown section id %d", id)
		}
		if uint64(r.pos)+uint64(size) > uint64(len(bin)) {
			return nil, fmt.Errorf("%s section: size %d past the end of the file", sectionNames[id], size)
		}
		if size > MaxSectionSize {
			return nil, fmt.Errorf("%s section: %d bytes, more than the %d the router allows", sectionNames[id], size, MaxSectionSize)
		}
		payload := bin[r.pos : r.pos+int(size)]
		r.pos += int(size)
		if id != secCustom {
			rank := sectionRank(id)
			if rank <= lastRank {
				return nil, fmt.Errorf("%s section out of order or repeated", sectionNames[id])
			}
			lastRank = rank
		} else if isNameSection(payload) {
			if names++; names > 1 {
				return nil, errors.New("name section repeated")
			}
		}
		secs = append(secs, section{id, payload})
	}

	m := &module{opts: opts, wrapTypes: map[string]uint32{}}
	for _, s := range secs {
		if err := m.scan(s); err != nil {
			return nil, err
		}
	}
	if m.codeCount != m.funcCount {
		return nil, fmt.Errorf("function section declares %d functions, code section has %d bodies", m.funcCount, m.codeCount)
	}
	if m.hasStart {
		if err := m.checkStart(); err != nil {
			return nil, err
		}
	}
	if m.tableElements > MaxTableElements {
		return nil, fmt.Errorf("tables declare %d elements in all, more than the %d the router allows", m.tableElements, MaxTableElements)
	}
	m.origGlobals = m.importedGlobals + m.globalCount
	m.interruptGlobal = m.origGlobals
	m.growFailedGlobal = m.origGlobals + 1
	m.fuelGlobal = m.origGlobals + 2
	m.stackGlobal = m.origGlobals + 3
	m.stackExhaustedGlobal = m.origGlobals + 4
	m.addGrow = m.hasMemory
	m.voidType = m.typeCount
	m.growType = m.typeCount + 1
	// Functions returning several values are wrapped in a block of a type
	// () -> (results), appended after the router's two types.
	for _, t := range m.funcTypes {
		res := m.types[t].results
		if _, ok := m.wrapTypes[string(res)]; len(res) > 1 && !ok {
			m.wrapTypes[string(res)] = m.typeCount + 2 + uint32(len(m.wrapList))
			m.wrapList = append(m.wrapList, res)
		}
	}
	m.slowFunc = m.importedFuncs + m.funcCount
	m.stackTrapFunc = m.slowFunc + 1
	m.growFunc = m.slowFunc + 2

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
				var err error
				if w, err = m.appendRewritten(w, section{id: id}); err != nil {
					return err
				}
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
		var err error
		if w, err = m.appendRewritten(w, s); err != nil {
			return nil, err
		}
	}
	if err := emitMissing(1 << 30); err != nil {
		return nil, err
	}
	return &Output{Binary: w, HasStart: m.hasStart, HasMemory: m.hasMemory, Imports: m.imports}, nil
}

func isNameSection(p []byte) bool {
	r := reader{b: p}
	defer func() { _ = recover() }() // a malformed name is not the name section
	n := r.u32()
	return uint64(r.pos)+uint64(n) <= uint64(len(p)) && string(p[r.pos:r.pos+int(n)]) == "name"
}

func appendSection(w []byte, id byte, payload []byte) []byte {
	w = append(w, id)
	w = appendU32(w, uint32(len(payload)))
	return append(w, payload...)
}

type funcType struct{ params, results []byte }

type module struct {
	opts Options

	types           []funcType
	typeCount       uint32
	importedFuncs   uint32
	importedGlobals uint32
	funcTypes       []uint32 // type of each defined function
	importTypes     []uint32 // type of each imported function
	funcCount       uint32
	globalCount     uint32
	codeCount       uint32
	tables          uint32
	tableElements   uint64 // declared minima of all tables
	hasMemory       bool
	hasStart        bool
	startFunc       uint32
	imports         []Import

	origGlobals          uint32 // globals the guest's code may use
	interruptGlobal      uint32
	growFailedGlobal     uint32
	fuelGlobal           uint32
	stackGlobal          uint32
	stackExhaustedGlobal uint32
	addGrow              bool
	slowFunc             uint32
	stackTrapFunc        uint32
	growFunc             uint32
	voidType             uint32
	growType             uint32
	wrapTypes            map[string]uint32 // results -> type index
	wrapList             [][]byte

	code   []byte // appendBody's buffers
	locals []byte
}

// scan walks the structure of section s, checks every count against the
// bytes left and the limits, and records what the rewrite needs to know.
func (m *module) scan(s section) error {
	r := reader{b: s.payload}
	switch s.id {
	case secCustom:
		if err := r.utf8Name(); err != nil {
			return fmt.Errorf("custom section name: %w", err)
		}
		if isNameSection(s.payload) {
			if len(s.payload) > MaxNameSectionSize {
				return fmt.Errorf("name section: %d bytes, more than the %d the router allows", len(s.payload), MaxNameSectionSize)
			}
			if err := scanNames(&r); err != nil {
				return fmt.Errorf("name section: %w", err)
			}
		}
		return nil
	case secType:
		m.typeCount = r.limitedCount("types", MaxTypes)
		m.types = make([]funcType, m.typeCount)
		for i := uint32(0); i < m.typeCount; i++ {
			if form := r.byte(); form != 0x60 {
				return fmt.Errorf("type %d: unknown form %#x", i, form)
			}
			m.types[i].params = r.bytes(r.limitedCount("parameters", MaxParams))
			m.types[i].results = r.bytes(r.limitedCount("results", MaxParams))
		}
	case secImport:
		n := r.limitedCount("imports", MaxImports)
		for i := uint32(0); i < n; i++ {
			mod := r.name()
			name := r.name()
			kind := r.byte()
			m.imports = append(m.imports, Import{Module: string(mod), Name: string(name), Kind: ImportKind(kind)})
			switch kind {
			case 0x00:
				m.importTypes = append(m.importTypes, r.u32())
				m.importedFuncs++
			case 0x01:
				r.byte()
				if err := m.table(&r); err != nil {
					return fmt.Errorf("import %d: %w", i, err)
				}
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
		m.funcCount = r.limitedCount("functions", MaxFunctions)
		m.funcTypes = make([]uint32, m.funcCount)
		for i := range m.funcTypes {
			t := r.u32()
			if t >= m.typeCount {
				return fmt.Errorf("function %d: type %d does not exist", m.importedFuncs+uint32(i), t)
			}
			m.funcTypes[i] = t
		}
	case secTable:
		n := r.count()
		for i := uint32(0); i < n; i++ {
			r.byte()
			if err := m.table(&r); err != nil {
				return fmt.Errorf("table %d: %w", i, err)
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
		m.globalCount = r.limitedCount("globals", MaxGlobals)
		for i := uint32(0); i < m.globalCount; i++ {
			r.byte()
			r.byte()
			if err := m.constExpr(&r); err != nil {
				return fmt.Errorf("global %d: %w", i, err)
			}
		}
	case secExport:
		n := r.limitedCount("exports", MaxExports)
		for i := uint32(0); i < n; i++ {
			r.name()
			r.byte()
			r.u32()
		}
	case secStart:
		m.hasStart = true
		m.startFunc = r.u32()
	case secElement:
		n := r.limitedCount("element segments", MaxSegments)
		for i := uint32(0); i < n; i++ {
			if err := m.elementSegment(&r); err != nil {
				return fmt.Errorf("element segment %d: %w", i, err)
			}
		}
	case secCode:
		m.codeCount = r.count()
		if m.codeCount != m.funcCount {
			return fmt.Errorf("function section declares %d functions, code section has %d bodies", m.funcCount, m.codeCount)
		}
		for i := uint32(0); i < m.codeCount; i++ {
			size := r.count()
			if size > MaxFunctionSize {
				return fmt.Errorf("function %d: body of %d bytes, more than the %d the router allows", m.importedFuncs+i, size, MaxFunctionSize)
			}
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
		n := r.limitedCount("data segments", MaxSegments)
		for i := uint32(0); i < n; i++ {
			switch flags := r.u32(); flags {
			case 0:
				if err := m.constExpr(&r); err != nil {
					return fmt.Errorf("data segment %d: %w", i, err)
				}
			case 1:
			case 2:
				r.u32()
				if err := m.constExpr(&r); err != nil {
					return fmt.Errorf("data segment %d: %w", i, err)
				}
			default:
				return fmt.Errorf("data segment %d: unknown flags %d", i, flags)
			}
			r.skip(int(r.count()))
		}
	case secDataCount:
		if n := r.u32(); n > MaxSegments {
			return fmt.Errorf("data count %d: more than the %d segments the router allows", n, MaxSegments)
		}
	}
	if !r.done() {
		return fmt.Errorf("%s section: %d bytes left over", sectionNames[s.id], len(r.b)-r.pos)
	}
	return nil
}

// checkStart checks the start function, which Rewrite moves to an export
// (where wazero would no longer check that it takes and returns nothing).
func (m *module) checkStart() error {
	var t uint32
	switch f := m.startFunc; {
	case f < m.importedFuncs:
		t = m.importTypes[f]
	case f-m.importedFuncs < m.funcCount:
		t = m.funcTypes[f-m.importedFuncs]
	default:
		return fmt.Errorf("start function %d does not exist", f)
	}
	if t >= m.typeCount || len(m.types[t].params) > 0 || len(m.types[t].results) > 0 {
		return fmt.Errorf("start function %d: must take and return nothing", m.startFunc)
	}
	return nil
}

// table reads a table's limits (its reference type read) and adds its
// minimum to the elements of all tables.
func (m *module) table(r *reader) error {
	if m.tables++; m.tables > MaxTables {
		return fmt.Errorf("more than the %d tables the router allows", MaxTables)
	}
	flags := r.byte()
	min := r.u32()
	if flags&1 != 0 {
		r.u32()
	}
	m.tableElements += uint64(min)
	if min > MaxTableElements {
		return fmt.Errorf("declares %d elements, more than the %d the router allows", min, MaxTableElements)
	}
	return nil
}

// Name sub-section ids.
const (
	nameModule   = 0
	nameFunction = 1
	nameLocal    = 2
)

// scanNames checks the "name" custom section, which wazero decodes even
// when custom sections are off. wazero reads a known sub-section's content
// without holding it to the sub-section's size, so each must parse to
// exactly its size here: then wazero reads the same bytes.
func scanNames(r *reader) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	for !r.done() {
		id := r.byte()
		size := r.count()
		end := r.pos + int(size)
		sub := reader{b: r.b[:end], pos: r.pos}
		var what string
		switch id {
		case nameModule:
			what = "module name"
			if err := sub.utf8Name(); err != nil {
				return fmt.Errorf("module name: %w", err)
			}
		case nameFunction:
			what = "function names"
			n := sub.count()
			for i := uint32(0); i < n; i++ {
				sub.u32()
				if err := sub.utf8Name(); err != nil {
					return fmt.Errorf("function name %d: %w", i, err)
				}
			}
		case nameLocal:
			what = "local names"
			n := sub.count()
			for i := uint32(0); i < n; i++ {
				sub.u32()
				k := sub.count()
				for j := uint32(0); j < k; j++ {
					sub.u32()
					if err := sub.utf8Name(); err != nil {
						return fmt.Errorf("local name %d.%d: %w", i, j, err)
					}
				}
			}
		default: // skipped by wazero by its size
			sub.pos = end
		}
		if !sub.done() {
			return fmt.Errorf("%s sub-section: %d bytes left over", what, end-sub.pos)
		}
		r.pos = end
	}
	return nil
}

// utf8Name reads a name, holding it to MaxNameLength and UTF-8.
func (r *reader) utf8Name() error {
	n := r.name()
	if !utf8.Valid(n) {
		return errors.New("not valid UTF-8")
	}
	return nil
}

// elementSegment skips one element segment (the eight encodings of the
// bulk-memory and reference-types proposals).
func (m *module) elementSegment(r *reader) error {
	flags := r.u32()
	if flags > 7 {
		return fmt.Errorf("unknown flags %d", flags)
	}
	if flags&1 == 0 { // active
		if flags&2 != 0 {
			r.u32() // table index
		}
		if err := m.constExpr(r); err != nil {
			return err
		}
	}
	if flags&3 != 0 {
		r.byte() // element kind or reference type
	}
	n := r.count()
	for i := uint32(0); i < n; i++ {
		if flags&4 == 0 {
			if err := m.funcRef(r.u32()); err != nil {
				return err
			}
		} else if err := m.constExpr(r); err != nil {
			return err
		}
	}
	return nil
}

// constExpr skips a constant expression up to and including its end: one
// instruction and end, as wazero's decodeConstantExpression reads it. A
// global.get may only name the module's own (imported) globals.
func (m *module) constExpr(r *reader) error {
	switch op := r.byte(); op {
	case 0x41:
		r.sleb(5)
	case 0x42:
		r.sleb(10)
	case 0x43:
		r.skip(4)
	case 0x44:
		r.skip(8)
	case 0x23: // global.get
		if idx := r.u32(); idx >= m.importedGlobals+m.globalCount {
			return fmt.Errorf("global %d does not exist", idx)
		}
	case 0xd2: // ref.func
		if err := m.funcRef(r.u32()); err != nil {
			return err
		}
	case 0xd0: // ref.null
		r.byte()
	case 0xfd:
		if sub := r.byte(); sub != 0x0c {
			return fmt.Errorf("instruction 0xfd %d in a constant expression", sub)
		}
		r.skip(16)
	default:
		return fmt.Errorf("instruction %#x in a constant expression", op)
	}
	if r.byte() != 0x0b {
		return errors.New("constant expression not terminated by end")
	}
	return nil
}

// appendRewritten appends section s, rewritten, to w (s.payload is nil for
// a section the module lacks).
func (m *module) appendRewritten(w []byte, s section) ([]byte, error) {
	if s.id == secCode {
		return m.appendCode(w, s.payload)
	}
	p, err := m.rewrite(s)
	if err != nil {
		return nil, err
	}
	return appendSection(w, s.id, p), nil
}

// rewrite returns the new payload of section s, other than the code
// section.
func (m *module) rewrite(s section) ([]byte, error) {
	r := reader{b: s.payload}
	switch s.id {
	case secType:
		var n uint32
		if s.payload != nil {
			n = r.u32()
		}
		w := appendU32(nil, n+2+uint32(len(m.wrapList)))
		w = append(w, r.rest()...)
		w = append(w, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f) // () -> (); (i32) -> i32
		for _, res := range m.wrapList {
			w = append(w, 0x60, 0)
			w = appendU32(w, uint32(len(res)))
			w = append(w, res...)
		}
		return w, nil
	case secFunction:
		var n uint32
		if s.payload != nil {
			n = r.u32()
		}
		add := uint32(2)
		if m.addGrow {
			add++
		}
		w := appendU32(nil, n+add)
		w = append(w, r.rest()...)
		w = appendU32(w, m.voidType) // $slow
		w = appendU32(w, m.voidType) // $stack_trap
		if m.addGrow {
			w = appendU32(w, m.growType)
		}
		return w, nil
	case secMemory:
		return m.rewriteMemory(r)
	case secTable:
		return m.rewriteTables(r), nil
	case secGlobal:
		var n uint32
		if s.payload != nil {
			n = r.u32()
		}
		w := appendU32(nil, n+5)
		w = append(w, r.rest()...)
		// (mut i32) interrupt = 0, grow_failed = 0, fuel = FuelTicks,
		// stack = StackBudget, stack_exhausted = 0.
		w = append(w, 0x7f, 1, 0x41, 0, 0x0b, 0x7f, 1, 0x41, 0, 0x0b, 0x7f, 1, 0x41)
		w = appendS32(w, FuelTicks)
		w = append(w, 0x0b, 0x7f, 1, 0x41)
		w = appendS32(w, StackBudget)
		return append(w, 0x0b, 0x7f, 1, 0x41, 0, 0x0b), nil
	case secExport:
		var n uint32
		if s.payload != nil {
			n = r.u32()
			for i := uint32(0); i < n; i++ {
				name := r.name()
				kind := r.byte()
				idx := r.u32()
				if bytes.HasPrefix(name, []byte(ReservedPrefix)) {
					return nil, fmt.Errorf("exports %q: names starting with %q are reserved for the router", name, ReservedPrefix)
				}
				switch {
				case kind == 0x00 && m.funcRef(idx) != nil:
					return nil, fmt.Errorf("export %q: function %d does not exist", name, idx)
				case kind == 0x03 && idx >= m.origGlobals:
					return nil, fmt.Errorf("export %q: global %d does not exist", name, idx)
				}
			}
			r = reader{b: s.payload}
			r.u32()
		}
		add := uint32(3)
		if m.hasStart {
			add++
		}
		w := appendU32(nil, n+add)
		w = append(w, r.rest()...)
		w = appendExport(w, InterruptExport, 0x03, m.interruptGlobal)
		w = appendExport(w, GrowFailedExport, 0x03, m.growFailedGlobal)
		w = appendExport(w, StackExhaustedExport, 0x03, m.stackExhaustedGlobal)
		if m.hasStart {
			w = appendExport(w, StartExport, 0x00, m.startFunc)
		}
		return w, nil
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
		if hasMax && max > 65536 {
			return nil, fmt.Errorf("memory %d: maximum of %d pages, more than WebAssembly's 65536", i, max)
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

// rewriteTables gives every table a maximum so that table.grow cannot take
// the tables together past MaxTableElements: each may grow by an equal
// share of what the declared minima (scan has checked their sum) leave.
func (m *module) rewriteTables(r reader) []byte {
	n := r.u32()
	share := uint32((MaxTableElements - m.tableElements) / uint64(max(m.tables, 1)))
	w := appendU32(nil, n)
	for i := uint32(0); i < n; i++ {
		w = append(w, r.byte()) // reference type
		flags := r.byte()
		lo := r.u32()
		hi := lo + share
		if flags&1 != 0 {
			hi = min(r.u32(), hi)
		}
		w = append(w, flags|1)
		w = appendU32(w, lo)
		w = appendU32(w, hi) // below lo if so declared: still invalid
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

// appendCode appends the rewritten code section to w. The section is most
// of a module: its bodies go straight into w, after room for the section's
// size (as many bytes as the original size takes), which is fixed up at
// the end, rather than into a buffer of their own copied into w again.
func (m *module) appendCode(w, payload []byte) ([]byte, error) {
	w = append(w, secCode)
	sizeAt := len(w)
	room := len(appendU32(nil, uint32(len(payload))))
	w = append(w, make([]byte, room)...)
	r := reader{b: payload}
	var n uint32
	if payload != nil {
		n = r.u32()
	}
	total := n + 2
	if m.addGrow {
		total++
	}
	w = appendU32(w, total)
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		if uint64(r.pos)+uint64(size) > uint64(len(payload)) {
			return nil, fmt.Errorf("function %d: body size %d past the end of the code section", m.importedFuncs+i, size)
		}
		var err error
		w, err = m.appendBody(w, payload[r.pos:r.pos+int(size)], i)
		if err != nil {
			return nil, fmt.Errorf("not a valid WebAssembly module: function %d: %w", m.importedFuncs+i, err)
		}
		r.pos += int(size)
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
	// $stack_trap: flag the exhausted budget, refill it (the trap unwinds
	// every frame charged to it), then trap. Other traps leave frames
	// charged: after one, the host discards the instance.
	g = []byte{0, 0x41, 1, 0x24} // no locals; i32.const 1; global.set
	g = appendU32(g, m.stackExhaustedGlobal)
	g = append(g, 0x41)
	g = appendS32(g, StackBudget)
	g = append(g, 0x24)
	g = appendU32(g, m.stackGlobal)
	g = append(g, 0x00, 0x0b) // unreachable; end
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
	// The section's size, moved up or down if it does not take room bytes.
	var sz [5]byte
	size := appendU32(sz[:0], uint32(len(w)-sizeAt-room))
	if len(size) != room {
		end := len(w)
		w = append(w, make([]byte, max(len(size)-room, 0))...)
		copy(w[sizeAt+len(size):], w[sizeAt+room:end])
		w = w[:end-room+len(size)]
	}
	copy(w[sizeAt:], size)
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

// appendBody appends the body of defined function fn to w, its size first,
// with the router's checks added:
//
//   - at entry, the function's frame is charged to the stack budget and a
//     fuel tick runs; the original body is wrapped in a block of the
//     function's result type, so that a branch to the function's label
//     lands on the release of the frame instead of leaving the function;
//   - before return and the tail calls, the frame is released;
//   - after every loop header, a fuel tick;
//   - before every bulk memory or table instruction, fuel is charged by its
//     length and the interrupt flag is checked;
//   - memory.grow becomes a call to $grow.
//
// The decoder must see exactly the instructions wazero executes, or a
// module could hide a global.set of the router's globals in bytes the
// rewriter takes for an immediate. It therefore reads every instruction as
// wazero v1.11.0 does (internal/wasm/func_validation.go and the compiler
// frontend internal/engine/wazevo/frontend/lower.go, which share
// internal/leb128), and refuses what it cannot read the same way:
//
//   - the 0xfd (SIMD) sub-opcode is one byte, not a LEB128: wazero reads
//     body[pc]; the spec's two-byte encoding of sub-opcodes from 128 on
//     (0xba 0x01) then reads as that byte followed by a nop (0x01), in
//     wazero and here alike;
//   - the 0xfc sub-opcode is a LEB128 u32 that must fit in a byte;
//   - the reserved memory index of memory.size/grow/fill/copy/init is one
//     zero byte;
//   - select's type vector is one byte count (which must be 1) and one byte
//     type;
//   - a block type is an s33 of at most 5 bytes; wazero stops reading at
//     the fifth byte even if it has the continuation bit, so such a block
//     type is refused here;
//   - u32 immediates follow leb128.LoadUint32: at most 5 bytes, no bits
//     past the 32nd;
//   - 0xfe (threads) is refused: wazero only accepts it behind an
//     experimental feature the router does not enable.
func (m *module) appendBody(w, body []byte, fn uint32) ([]byte, error) {
	r := reader{b: body}
	groups := r.u32()
	groupsStart := r.pos
	var locals, slots uint64
	for i := uint32(0); i < groups; i++ {
		n := r.u32()
		t := r.byte()
		locals += uint64(n)
		slots += uint64(n) * slotsOf(t)
	}
	groupsEnd := r.pos
	ft := m.types[m.funcTypes[fn]]
	for _, p := range ft.params {
		slots += slotsOf(p)
	}
	cost := uint32(slots) + FrameSlots
	scratch := uint32(len(ft.params)) + uint32(locals) // the added i32 local
	needScratch := false

	c := m.code[:0]
	c = m.appendStackCharge(c, cost)
	c = m.appendCheck(c)
	c = append(c, 0x02) // block: the function's label, see above
	c = m.appendBlockType(c, ft.results)
	last := r.pos
	flush := func(to int) {
		c = append(c, body[last:to]...)
		last = to
	}
	depth := 0
	for {
		if r.done() {
			return nil, errors.New("body does not end with end")
		}
		at := r.pos
		op := r.byte()
		// The most frequent instructions first.
		switch {
		case (op >= 0x20 && op <= 0x22) || op == 0x25 || op == 0x26:
			r.u32()
		case op >= 0x28 && op <= 0x3e: // loads and stores
			r.u32()
			r.u32()
		case op == 0x41:
			r.sleb(5)
		case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x1a || op == 0x1b ||
			(op >= 0x45 && op <= 0xc4) || op == 0xd1:
			// No immediates.
		case op == 0x23 || op == 0x24: // global.get/set: not the router's globals
			if idx := r.u32(); idx >= m.origGlobals {
				return nil, fmt.Errorf("global %d does not exist", idx)
			}
		case op == 0x0c || op == 0x0d: // br, br_if
			if err := label(r.u32(), depth); err != nil {
				return nil, err
			}
		case op == 0x0b: // end
			if depth > 0 {
				depth--
				continue
			}
			if !r.done() {
				return nil, fmt.Errorf("%d bytes after the end of the body", len(body)-r.pos)
			}
			flush(at)
			c = append(c, 0x0b) // the block of the function's label
			c = m.appendStackRelease(c, cost)
			c = append(c, 0x0b)
			m.code = c
			locals := body[:groupsEnd]
			if needScratch {
				locals = appendU32(m.locals[:0], groups+1)
				locals = append(locals, body[groupsStart:groupsEnd]...)
				locals = append(locals, 1, 0x7f)
				m.locals = locals
			}
			w = appendU32(w, uint32(len(locals)+len(c)))
			w = append(w, locals...)
			return append(w, c...), nil
		case op == 0x02 || op == 0x04: // block, if
			if err := m.blockType(&r); err != nil {
				return nil, err
			}
			depth++
		case op == 0x42:
			r.sleb(10)
		case op == 0x10 || op == 0xd2: // call, ref.func
			if err := m.funcRef(r.u32()); err != nil {
				return nil, err
			}
		case op == 0x03: // loop: a tick after its block type
			if err := m.blockType(&r); err != nil {
				return nil, err
			}
			depth++
			flush(r.pos)
			c = m.appendCheck(c)
		case op == 0x0f: // return
			flush(at)
			c = m.appendStackRelease(c, cost)
		case op == 0x12: // return_call
			if err := m.funcRef(r.u32()); err != nil {
				return nil, err
			}
			flush(at)
			c = m.appendStackRelease(c, cost)
		case op == 0x13: // return_call_indirect
			if err := m.typeRef(r.u32()); err != nil {
				return nil, err
			}
			r.u32()
			flush(at)
			c = m.appendStackRelease(c, cost)
		case op == 0x0e: // br_table
			n := r.count()
			for i := uint32(0); i <= n; i++ {
				if err := label(r.u32(), depth); err != nil {
					return nil, err
				}
			}
		case op == 0x11: // call_indirect
			if err := m.typeRef(r.u32()); err != nil {
				return nil, err
			}
			r.u32()
		case op == 0x1c: // select t*
			if n := r.byte(); n != 1 {
				return nil, fmt.Errorf("select with %d types at offset %d", n, at)
			}
			r.byte()
		case op == 0x3f: // memory.size
			r.zero()
		case op == 0x40: // memory.grow -> call $grow
			r.zero()
			if m.addGrow {
				flush(at)
				c = append(c, 0x10)
				c = appendU32(c, m.growFunc)
				last = r.pos
			}
		case op == 0x43:
			r.skip(4)
		case op == 0x44:
			r.skip(8)
		case op == 0xd0: // ref.null
			r.byte()
		case op == 0xfc:
			bulk, err := r.misc()
			if err != nil {
				return nil, err
			}
			if bulk {
				flush(at)
				c = m.appendBulkCheck(c, scratch)
				needScratch = true
			}
		case op == 0xfd:
			r.simd()
		case op == 0xfe:
			return nil, errors.New("threads (atomic) instructions are not supported")
		default:
			return nil, fmt.Errorf("unknown instruction %#x at offset %d", op, at)
		}
	}
}

// label refuses a branch past the function's label: the block appendBody
// wraps the body in would make it valid, a branch out of the function that
// skips the release of the frame.
func label(idx uint32, depth int) error {
	if uint64(idx) > uint64(depth) {
		return fmt.Errorf("branch to label %d, %d deep", idx, depth)
	}
	return nil
}

// slotsOf is how many 8-byte stack slots a value of type t takes.
func slotsOf(t byte) uint64 {
	if t == 0x7b { // v128
		return 2
	}
	return 1
}

// appendBlockType appends the block type of a block whose results are
// results and whose parameters are none.
func (m *module) appendBlockType(w []byte, results []byte) []byte {
	switch len(results) {
	case 0:
		return append(w, 0x40)
	case 1:
		return append(w, results[0])
	}
	return appendS32(w, int32(m.wrapTypes[string(results)]))
}

// appendStackCharge appends the charge of a frame of cost slots:
//
//	global.get $stack  i32.const cost  i32.lt_u  if  call $stack_trap  end
//	global.get $stack  i32.const cost  i32.sub  global.set $stack
func (m *module) appendStackCharge(w []byte, cost uint32) []byte {
	w = append(w, 0x23)
	w = appendU32(w, m.stackGlobal)
	w = append(w, 0x41)
	w = appendS32(w, int32(cost))
	w = append(w, 0x49, 0x04, 0x40, 0x10)
	w = appendU32(w, m.stackTrapFunc)
	w = append(w, 0x0b, 0x23)
	w = appendU32(w, m.stackGlobal)
	w = append(w, 0x41)
	w = appendS32(w, int32(cost))
	w = append(w, 0x6b, 0x24)
	return appendU32(w, m.stackGlobal)
}

// appendStackRelease appends the release of a frame of cost slots:
//
//	global.get $stack  i32.const cost  i32.add  global.set $stack
func (m *module) appendStackRelease(w []byte, cost uint32) []byte {
	w = append(w, 0x23)
	w = appendU32(w, m.stackGlobal)
	w = append(w, 0x41)
	w = appendS32(w, int32(cost))
	w = append(w, 0x6a, 0x24)
	return appendU32(w, m.stackGlobal)
}

// appendBulkCheck appends the checkpoint before a bulk memory or table
// instruction, whose length operand is on top of the stack: fuel is charged
// one tick plus one per BulkTickBytes of length ($slow runs when it runs
// out, so that a guest moving much memory still exits to Go regularly), and
// the interrupt flag is checked, so that a loop of large fills stops
// within one fill of its deadline.
//
//	local.tee $n
//	global.get $fuel  local.get $n  i32.const log2(BulkTickBytes)  i32.shr_u  i32.sub
//	i32.const 1  i32.sub  global.set $fuel
//	global.get $fuel  i32.const 1  i32.lt_s  if  call $slow  end
//	global.get $interrupt  if  unreachable  end
func (m *module) appendBulkCheck(w []byte, scratch uint32) []byte {
	w = append(w, 0x22)
	w = appendU32(w, scratch)
	w = append(w, 0x23)
	w = appendU32(w, m.fuelGlobal)
	w = append(w, 0x20)
	w = appendU32(w, scratch)
	w = append(w, 0x41, bulkTickShift, 0x76, 0x6b, 0x41, 1, 0x6b, 0x24)
	w = appendU32(w, m.fuelGlobal)
	w = append(w, 0x23)
	w = appendU32(w, m.fuelGlobal)
	w = append(w, 0x41, 1, 0x48, 0x04, 0x40, 0x10)
	w = appendU32(w, m.slowFunc)
	w = append(w, 0x0b, 0x23)
	w = appendU32(w, m.interruptGlobal)
	return append(w, 0x04, 0x40, 0x00, 0x0b)
}

// misc reads a 0xfc instruction after its prefix and reports whether it is
// a bulk memory or table instruction that takes a length.
func (r *reader) misc() (bulk bool, err error) {
	switch sub := r.u32(); sub {
	case 0, 1, 2, 3, 4, 5, 6, 7: // saturating truncations
	case 8: // memory.init data 0
		r.u32()
		r.zero()
		return true, nil
	case 9, 13, 16: // data.drop, elem.drop, table.size
		r.u32()
	case 10: // memory.copy 0 0
		r.zero()
		r.zero()
		return true, nil
	case 11: // memory.fill 0
		r.zero()
		return true, nil
	case 12, 14: // table.init elem table, table.copy table table
		r.u32()
		r.u32()
		return true, nil
	case 15, 17: // table.grow, table.fill
		r.u32()
		return true, nil
	default:
		return false, fmt.Errorf("unknown instruction 0xfc %d", sub)
	}
	return false, nil
}

// simd reads a 0xfd instruction after its prefix. Sub-opcodes wazero does
// not know have no immediates here and are refused by wazero.
func (r *reader) simd() {
	switch sub := r.byte(); {
	case sub <= 0x0b, sub == 0x5c, sub == 0x5d: // v128 loads and stores
		r.u32()
		r.u32()
	case sub == 0x0c, sub == 0x0d: // v128.const, i8x16.shuffle
		r.skip(16)
	case sub >= 0x15 && sub <= 0x22: // extract/replace lane
		r.byte()
	case sub >= 0x54 && sub <= 0x5b: // load/store lane
		r.u32()
		r.u32()
		r.byte()
	}
}

// blockType reads a block type as wazero's leb128.DecodeInt33AsInt64 does
// (at most 5 bytes), refusing a fifth byte with the continuation bit, which
// wazero would take as the end of the block type, and a type index past
// the module's own types.
func (m *module) blockType(r *reader) error {
	var v int64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= int64(c&0x7f) << shift
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				return nil // negative: a value type (or invalid, for wazero to refuse)
			}
			return m.typeRef(uint32(min(v, 1<<32-1)))
		}
	}
	panic("block type: LEB128 integer too long")
}

// funcRef and typeRef refuse a reference to a function or type the rewrite
// adds: it would make an invalid module valid, and give the guest the
// router's functions.
func (m *module) funcRef(idx uint32) error {
	if uint64(idx) >= uint64(m.importedFuncs)+uint64(m.funcCount) {
		return fmt.Errorf("function %d does not exist", idx)
	}
	return nil
}

func (m *module) typeRef(idx uint32) error {
	if idx >= m.typeCount {
		return fmt.Errorf("type %d does not exist", idx)
	}
	return nil
}

// sleb skips a signed LEB128 of at most max bytes (5 for i32, 10 for i64,
// as leb128.LoadInt32/LoadInt64 allow).
func (r *reader) sleb(max int) {
	for i := 0; i < max; i++ {
		if r.byte()&0x80 == 0 {
			return
		}
	}
	panic("LEB128 integer too long")
}

// zero reads a reserved memory index, which wazero requires to be a zero
// encoded in one byte.
func (r *reader) zero() {
	if r.byte() != 0 {
		panic("memory index must be a zero byte (multiple memories are not supported)")
	}
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

// u32 reads an unsigned LEB128 of at most 5 bytes as wazero's
// leb128.LoadUint32 does, refusing bits past the 32nd.
func (r *reader) u32() uint32 {
	var v uint32
	for shift := uint(0); shift < 35; shift += 7 {
		c := r.byte()
		if c&0x80 == 0 {
			if shift == 28 && c&0xf0 != 0 {
				panic("LEB128 integer overflows 32 bits")
			}
			return v | uint32(c)<<shift
		}
		v |= uint32(c&0x7f) << shift
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

// name reads a name, held to MaxNameLength.
func (r *reader) name() []byte {
	n := r.count()
	if n > MaxNameLength {
		panic(fmt.Sprintf("name of %d bytes, more than the %d the router allows", n, MaxNameLength))
	}
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

// limitedCount is count, also held to max.
func (r *reader) limitedCount(what string, max uint32) uint32 {
	n := r.count()
	if n > max {
		panic(fmt.Sprintf("%d %s, more than the %d the router allows", n, what, max))
	}
	return n
}

// bytes reads n bytes.
func (r *reader) bytes(n uint32) []byte {
	start := r.pos
	r.skip(int(n))
	return r.b[start:r.pos]
}
