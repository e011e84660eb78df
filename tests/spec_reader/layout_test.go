package specreader

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	long := strings.Repeat("a", 255)
	ok := map[string]string{
		"x":          "/x",
		"/x":         "/x",
		"sensors":    "/sensors",
		"/a.b-c_d":   "/a.b-c_d",
		"...":        "/...",
		"/" + long:   "/" + long,
		long:         "/" + long,
		"héllo":      "/héllo",
		".hidden":    "/.hidden",
		"/..x":       "/..x",
		"with space": "/with space",
	}
	for in, want := range ok {
		got, body, err := NormalizeName(in)
		if err != nil || got != want || "/"+body != want {
			t.Errorf("NormalizeName(%q) = %q, %q, %v; want %q", in, got, body, err, want)
		}
	}
	for _, in := range []string{"", "/", "//x", "a/b", "/a/", "x\x00y", ".", "..", "/.", "/..", long + "a", "/" + long + "a"} {
		if _, _, err := NormalizeName(in); !errors.Is(err, ErrArgument) {
			t.Errorf("NormalizeName(%q): %v, want an ArgumentError", in, err)
		}
		if _, err := Open(in, nil); !errors.Is(err, ErrArgument) {
			t.Errorf("Open(%q): %v, want an ArgumentError", in, err)
		}
	}
}

func TestGeometryExamples(t *testing.T) {
	// Section 3's first example.
	g, err := ComputeGeometry(Float64, []uint64{4}, 16, true)
	if err != nil {
		t.Fatal(err)
	}
	if g.ValuesSize != 32 || g.ValuesOffset != 64 || g.MessageOffset != 128 || g.RecordSize != 192 ||
		g.RecordOffset != [2]uint64{4096, 4288} || g.TotalSize != 8192 {
		t.Errorf("float64 (4,) cap 16 backup: %+v", g)
	}
	// Section 3's second example: message first.
	g, err = ComputeGeometry(Uint8, []uint64{1<<32 - 127}, 100, false)
	if err != nil {
		t.Fatal(err)
	}
	if g.MessageOffset != 64 || g.ValuesOffset != 192 || g.RecordSize != 192+1<<32-64 || g.RecordOffset[1] != 0 {
		t.Errorf("uint8 (2^32-127,) cap 100: %+v", g)
	}
	// Both sides of the switch: values_size 2^32-128 is the last values-first size.
	g, _ = ComputeGeometry(Uint8, []uint64{1<<32 - 128}, 0, false)
	if g.ValuesOffset != 64 || g.MessageOffset != 1<<32-64 {
		t.Errorf("uint8 (2^32-128,): %+v", g)
	}
	// 0-d, empty, no backup.
	g, _ = ComputeGeometry(Int8, nil, 4, false)
	if g.ValuesSize != 1 || g.RecordSize != 192 || g.TotalSize != 8192 || g.RecordOffset[1] != 0 {
		t.Errorf("int8 (): %+v", g)
	}
	g, _ = ComputeGeometry(Uint8, []uint64{0}, 0, true)
	if g.ValuesSize != 0 || g.RecordSize != 64 || g.MessageOffset != 64 || g.TotalSize != 8192 {
		t.Errorf("uint8 (0,): %+v", g)
	}
	// An extent of 0 anywhere makes values_size 0, even after huge extents.
	if g, err = ComputeGeometry(Complex128, []uint64{1 << 36, 0}, 0, true); err != nil || g.ValuesSize != 0 {
		t.Errorf("complex128 (2^36, 0): %+v %v", g, err)
	}
	// ...but the left-to-right check refuses a huge extent before a later 0.
	if _, err = ComputeGeometry(Uint8, []uint64{1 << 41, 0}, 0, true); err == nil {
		t.Errorf("uint8 (2^41, 0) accepted")
	}
	// Limits.
	if _, err = ComputeGeometry(Uint8, []uint64{1 << 40}, 1<<24, true); err != nil {
		t.Errorf("2^40 bytes and 2^24 capacity are allowed: %v", err)
	}
	for _, c := range []struct {
		shape []uint64
		cap   uint64
	}{
		{[]uint64{1<<40 + 1}, 0},
		{[]uint64{1 << 38, 5}, 0},
		{[]uint64{math.MaxUint64, math.MaxUint64}, 0},
		{[]uint64{1}, 1<<24 + 1},
	} {
		if _, err := ComputeGeometry(Uint8, c.shape, c.cap, true); err == nil || !strings.Contains(err.Error(), "impossible geometry") {
			t.Errorf("shape %v cap %d: %v", c.shape, c.cap, err)
		}
	}
	if _, err := ComputeGeometry(Float64, []uint64{1 << 37}, 0, true); err != nil {
		t.Errorf("float64 2^37 = 2^40 bytes: %v", err)
	}
	if _, err := ComputeGeometry(Float64, []uint64{1<<37 + 1}, 0, true); err == nil {
		t.Errorf("float64 2^37+1 accepted")
	}
}

func TestDTypes(t *testing.T) {
	sizes := map[string]uint32{"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
		"uint32": 4, "int64": 8, "uint64": 8, "float16": 2, "float32": 4, "float64": 8, "complex64": 8, "complex128": 16}
	for name, size := range sizes {
		d, ok := ParseDType(name)
		if !ok || d.ItemSize() != size || d.String() != name {
			t.Errorf("%s: code %d size %d", name, d, d.ItemSize())
		}
	}
	if DType(0).Valid() || DType(15).Valid() {
		t.Error("codes 0 and 15 valid")
	}
	for h, want := range map[uint16]float64{0x3c00: 1, 0xbc00: -1, 0x0001: math.Ldexp(1, -24), 0x7bff: 65504, 0x0400: math.Ldexp(1, -14), 0x3555: 0.333251953125} {
		if got := DecodeFloat16(h); got != want {
			t.Errorf("float16 %04x = %v, want %v", h, got, want)
		}
	}
	if !math.IsNaN(DecodeFloat16(0x7e00)) || !math.IsInf(DecodeFloat16(0xfc00), -1) || !math.Signbit(DecodeFloat16(0x8000)) {
		t.Error("float16 specials")
	}
	got := string(AppendValuesJSON(nil, Float64, []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0x80}))
	if got != "[NaN, -0.0]" {
		t.Errorf("values JSON %s", got)
	}
}
