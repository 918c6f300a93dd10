package wasm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
)

// The guest ABI "evr-filter v1". README (wasm section) documents it for
// filter authors; these names and signatures are the contract.
const (
	exportMemory     = "memory"
	exportABIVersion = "evr_abi_version_1"
	exportFilter     = "evr_filter"
	exportInitialize = "_initialize"
	exportInit       = "evr_init"
	exportStart      = "_start"

	hostModule = "evr"
	wasiModule = "wasi_snapshot_preview1"
)

// Verdicts returned by evr_filter.
const (
	verdictPass    = 0
	verdictDrop    = 1
	verdictReplace = 2
	verdictError   = 3
)

// Log levels of the evr.log import.
const (
	guestLevelDebug = -1
	guestLevelInfo  = 0
	guestLevelWarn  = 1
	guestLevelError = 2
)

// maxErrorReason caps what evr.set_error keeps; maxGuestLogLine caps one
// line of guest output (evr.log, stdout, stderr).
const (
	maxErrorReason  = 1024
	maxGuestLogLine = 4096
)

var (
	i32 = api.ValueTypeI32
)

// signature is a function type in WAT notation, for messages.
type signature struct {
	params, results []api.ValueType
}

func (s signature) String() string {
	var b strings.Builder
	b.WriteString("(func")
	if len(s.params) > 0 {
		b.WriteString(" (param")
		for _, p := range s.params {
			b.WriteString(" " + api.ValueTypeName(p))
		}
		b.WriteString(")")
	}
	if len(s.results) > 0 {
		b.WriteString(" (result")
		for _, r := range s.results {
			b.WriteString(" " + api.ValueTypeName(r))
		}
		b.WriteString(")")
	}
	b.WriteString(")")
	return b.String()
}

func (s signature) matches(def api.FunctionDefinition) bool {
	return slices.Equal(s.params, def.ParamTypes()) && slices.Equal(s.results, def.ResultTypes())
}

func sigOf(def api.FunctionDefinition) signature {
	return signature{def.ParamTypes(), def.ResultTypes()}
}

// hostFunctions are the imports of module "evr", with their signatures.
var hostFunctions = map[string]signature{
	"read_event":  {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
	"get_config":  {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
	"set_output":  {[]api.ValueType{i32, i32}, nil},
	"set_error":   {[]api.ValueType{i32, i32}, nil},
	"log":         {[]api.ValueType{i32, i32, i32}, nil},
	"log_enabled": {[]api.ValueType{i32}, []api.ValueType{i32}},
}

func hostFunctionList() string {
	names := make([]string, 0, len(hostFunctions))
	for n := range hostFunctions {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// requiredExports and optionalExports are the guest's exports.
var (
	sigFilter     = signature{[]api.ValueType{i32}, []api.ValueType{i32}}
	sigVoid       = signature{}
	sigInit       = signature{nil, []api.ValueType{i32}}
	exportPurpose = map[string]string{
		exportABIVersion: "a marker declaring ABI version 1, never called",
		exportFilter:     "called once per event with the event's length; returns the verdict",
	}
)

// validate checks a compiled module against the ABI. wasi holds the
// signatures of the WASI functions the host provides. Each message names
// what is wrong and what was expected.
func validate(cm wazero.CompiledModule, imports []instrument.Import, wasi map[string]api.FunctionDefinition) error {
	for _, im := range imports {
		if im.Kind != instrument.ImportFunc {
			return fmt.Errorf("imports %s %s.%s: filters may import only functions (from %q and %q)",
				im.Kind, im.Module, im.Name, hostModule, wasiModule)
		}
	}
	for _, def := range cm.ImportedFunctions() {
		mod, name, _ := def.Import()
		switch mod {
		case hostModule:
			want, ok := hostFunctions[name]
			if !ok {
				return fmt.Errorf("imports %s.%s, which the router does not provide (module %q has: %s)",
					mod, name, hostModule, hostFunctionList())
			}
			if !want.matches(def) {
				return fmt.Errorf("imports %s.%s with signature %s, want %s", mod, name, sigOf(def), want)
			}
		case wasiModule:
			w, ok := wasi[name]
			if !ok {
				return fmt.Errorf("imports %s.%s, which the router's WASI preview 1 does not provide", mod, name)
			}
			if !sigOf(w).matches(def) {
				return fmt.Errorf("imports %s.%s with signature %s, want %s", mod, name, sigOf(def), sigOf(w))
			}
		default:
			hint := ""
			if mod == "env" && name == "abort" {
				hint = " (AssemblyScript: build with --use abort=)"
			}
			return fmt.Errorf("imports %s.%s: filters may import only from %q (%s) and %q%s",
				mod, name, hostModule, hostFunctionList(), wasiModule, hint)
		}
	}

	exports := cm.ExportedFunctions()
	if _, ok := cm.ExportedMemories()[exportMemory]; !ok {
		return fmt.Errorf("missing export %q: the module must export its linear memory as %q", exportMemory, exportMemory)
	}
	if _, ok := exports[exportABIVersion]; !ok {
		for name := range exports {
			if strings.HasPrefix(name, "evr_abi_version_") {
				return fmt.Errorf("exports %s: this router supports only ABI version 1 (export %q %s)", name, exportABIVersion, sigVoid)
			}
		}
	}
	for _, e := range []struct {
		name string
		sig  signature
	}{{exportABIVersion, sigVoid}, {exportFilter, sigFilter}} {
		def, ok := exports[e.name]
		if !ok {
			hint := ""
			if _, cmd := exports[exportStart]; cmd {
				hint = "; the module exports _start: it is a WASI command, build a reactor instead (Go: -buildmode=c-shared; C: -mexec-model=reactor)"
			}
			return fmt.Errorf("missing export %q: want %s, %s%s", e.name, e.sig, exportPurpose[e.name], hint)
		}
		if !e.sig.matches(def) {
			return fmt.Errorf("export %q has signature %s, want %s", e.name, sigOf(def), e.sig)
		}
	}
	for _, e := range []struct {
		name string
		sig  signature
	}{{exportInitialize, sigVoid}, {exportInit, sigInit}} {
		if def, ok := exports[e.name]; ok && !e.sig.matches(def) {
			return fmt.Errorf("export %q has signature %s, want %s", e.name, sigOf(def), e.sig)
		}
	}
	return nil
}
