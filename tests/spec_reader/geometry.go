package specreader

import "fmt"

// DType is a dtype code of LAYOUT.md section 5.1.
type DType uint32

// The dtype codes (part of the layout, never renumbered).
const (
	Bool       DType = 1
	Int8       DType = 2
	Uint8      DType = 3
	Int16      DType = 4
	Uint16     DType = 5
	Int32      DType = 6
	Uint32     DType = 7
	Int64      DType = 8
	Uint64     DType = 9
	Float16    DType = 10
	Float32    DType = 11
	Float64    DType = 12
	Complex64  DType = 13
	Complex128 DType = 14
)

var dtypeNames = [...]string{"", "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32",
	"int64", "uint64", "float16", "float32", "float64", "complex64", "complex128"}

var itemSizes = [...]uint32{0, 1, 1, 1, 2, 2, 4, 4, 8, 8, 2, 4, 8, 8, 16}

// Valid reports whether d is a code of section 5.1.
func (d DType) Valid() bool { return d >= 1 && d <= 14 }

// String returns numpy's name of the dtype.
func (d DType) String() string {
	if d.Valid() {
		return dtypeNames[d]
	}
	return fmt.Sprintf("dtype(%d)", uint32(d))
}

// ItemSize returns ITEMSIZE[d], 0 for an unknown code.
func (d DType) ItemSize() uint32 {
	if d.Valid() {
		return itemSizes[d]
	}
	return 0
}

// ParseDType maps numpy's name to the code.
func ParseDType(name string) (DType, bool) {
	for i := 1; i < len(dtypeNames); i++ {
		if dtypeNames[i] == name {
			return DType(i), true
		}
	}
	return 0, false
}

// Layout limits (section 3).
const (
	PageSize       = 4096
	HeaderSize     = 4096
	MaxNdim        = 8
	MaxValuesSize  = uint64(1) << 40
	MaxMessageCap  = uint64(1) << 24
	recordMetaSize = 64
)

// Geometry is every size and offset of a segment, a pure function of
// (dtype, shape, message capacity, backup) (section 3).
type Geometry struct {
	DType           DType
	Shape           []uint64
	MessageCapacity uint32
	Backup          bool

	ItemSize      uint32
	ValuesSize    uint64
	ValuesOffset  uint32
	MessageOffset uint32
	RecordSize    uint64
	RecordOffset  [2]uint64
	TotalSize     uint64
}

func roundUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// ComputeGeometry implements compute_geometry (section 3). It refuses
// impossible parameters with an ArgumentError whose text says "impossible
// geometry"; the opener turns it into a LayoutError.
func ComputeGeometry(dtype DType, shape []uint64, messageCapacity uint64, backup bool) (Geometry, error) {
	if !dtype.Valid() {
		return Geometry{}, argErr("unknown dtype code %d", uint32(dtype))
	}
	if len(shape) > MaxNdim {
		return Geometry{}, argErr("ndim %d exceeds %d", len(shape), MaxNdim)
	}
	item := uint64(dtype.ItemSize())
	bytes := item
	for _, e := range shape {
		if e != 0 && bytes > MaxValuesSize/e {
			return Geometry{}, argErr("impossible geometry: values would exceed 2^40 bytes")
		}
		bytes *= e
	}
	if bytes > MaxValuesSize {
		return Geometry{}, argErr("impossible geometry: values would exceed 2^40 bytes")
	}
	if messageCapacity > MaxMessageCap {
		return Geometry{}, argErr("impossible geometry: message capacity %d exceeds 2^24", messageCapacity)
	}
	g := Geometry{
		DType:           dtype,
		Shape:           append([]uint64(nil), shape...),
		MessageCapacity: uint32(messageCapacity),
		Backup:          backup,
		ItemSize:        uint32(item),
		ValuesSize:      bytes,
	}
	v := roundUp(bytes, 64)
	m := roundUp(messageCapacity, 64)
	if recordMetaSize+v <= 1<<32-1 {
		g.ValuesOffset = recordMetaSize
		g.MessageOffset = uint32(recordMetaSize + v)
		g.RecordSize = recordMetaSize + v + m
	} else {
		g.MessageOffset = recordMetaSize
		g.ValuesOffset = uint32(recordMetaSize + m)
		g.RecordSize = recordMetaSize + m + v
	}
	g.RecordOffset[0] = HeaderSize
	slots := uint64(1)
	if backup {
		g.RecordOffset[1] = HeaderSize + g.RecordSize
		slots = 2
	}
	g.TotalSize = roundUp(HeaderSize+g.RecordSize*slots, PageSize)
	return g, nil
}

// NumElements is the product of the extents (1 for a 0-d array).
func (g Geometry) NumElements() uint64 {
	n := uint64(1)
	for _, e := range g.Shape {
		n *= e
	}
	return n
}

// ShapeString prints the shape as Python prints a tuple: (4,), (2, 3), ().
func (g Geometry) ShapeString() string {
	switch len(g.Shape) {
	case 0:
		return "()"
	case 1:
		return fmt.Sprintf("(%d,)", g.Shape[0])
	}
	s := "("
	for i, e := range g.Shape {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprint(e)
	}
	return s + ")"
}
