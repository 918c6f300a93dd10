//go:build wasip1

package guest

import "unsafe"

//go:wasmimport evr read_event
func evrReadEvent(buf unsafe.Pointer, bufLen uint32) uint32

//go:wasmimport evr get_config
func evrGetConfig(buf unsafe.Pointer, bufLen uint32) uint32

//go:wasmimport evr set_output
func evrSetOutput(ptr unsafe.Pointer, n uint32)

//go:wasmimport evr set_error
func evrSetError(ptr unsafe.Pointer, n uint32)

//go:wasmimport evr log
func evrLog(level int32, ptr unsafe.Pointer, n uint32)

//go:wasmimport evr log_enabled
func evrLogEnabled(level int32) int32

//go:wasmexport evr_abi_version_1
func evrABIVersion1() {}

//go:wasmexport evr_filter
func evrFilter(eventLen int32) int32 { return filterEvent(eventLen) }

//go:wasmexport evr_init
func evrInit() int32 { return initModule() }

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func hostReadEvent(b []byte) int  { return int(evrReadEvent(ptr(b), uint32(len(b)))) }
func hostGetConfig(b []byte) int  { return int(evrGetConfig(ptr(b), uint32(len(b)))) }
func hostSetOutput(b []byte)      { evrSetOutput(ptr(b), uint32(len(b))) }
func hostLogEnabled(l int32) bool { return evrLogEnabled(l) != 0 }
func hostSetError(msg string)     { evrSetError(unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg))) }
func hostLog(level int32, m string) {
	evrLog(level, unsafe.Pointer(unsafe.StringData(m)), uint32(len(m)))
}
