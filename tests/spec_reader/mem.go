package specreader

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// hostLittle is true on little-endian hosts (every platform xshm supports).
var hostLittle = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// le64 and le32 turn a word loaded with a native atomic load into the value of
// the little-endian field it holds.
func le64(v uint64) uint64 {
	if hostLittle {
		return v
	}
	return bits.ReverseBytes64(v)
}

func le32(v uint32) uint32 {
	if hostLittle {
		return v
	}
	return bits.ReverseBytes32(v)
}

// at returns a pointer off bytes past base. The caller has checked that the
// access lies inside the mapping.
func at(base unsafe.Pointer, off uint64) unsafe.Pointer {
	return unsafe.Add(base, uintptr(off))
}

func load64(base unsafe.Pointer, off uint64) uint64 {
	return le64(atomic.LoadUint64((*uint64)(at(base, off))))
}

func load32(base unsafe.Pointer, off uint64) uint32 {
	return le32(atomic.LoadUint32((*uint32)(at(base, off))))
}

// copyAtomic copies n bytes starting at the 8-byte-aligned src into dst
// (len(dst) >= n) with 8-byte atomic loads. It reads round_up(n, 8) bytes:
// the caller guarantees they lie inside the mapping (values and message areas
// are padded to 64 bytes inside the record slot, so they always do).
func copyAtomic(dst []byte, src unsafe.Pointer, n uint64) {
	var w [8]byte
	full := n / 8
	for i := uint64(0); i < full; i++ {
		binary.NativeEndian.PutUint64(dst[i*8:], atomic.LoadUint64((*uint64)(at(src, i*8))))
	}
	if rest := n - full*8; rest != 0 {
		binary.NativeEndian.PutUint64(w[:], atomic.LoadUint64((*uint64)(at(src, full*8))))
		copy(dst[full*8:n], w[:rest])
	}
}
