package specreader

import (
	"encoding/binary"
	"math"
	"strconv"
)

// DecodeFloat16 decodes an IEEE 754 binary16 value exactly.
func DecodeFloat16(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(frac, -24)
	case 0x1f:
		if frac != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	}
	return sign * math.Ldexp(1024+frac, exp-25)
}

// AppendFloatJSON appends f as Python's json module reads it back exactly:
// shortest round-trip digits, always a float literal ("2.0", "-0.0"), and
// NaN / Infinity / -Infinity (not standard JSON, but Python's).
func AppendFloatJSON(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	for _, c := range dst[start:] {
		if c == '.' || c == 'e' {
			return dst
		}
	}
	return append(dst, ".0"...)
}

// AppendValuesJSON appends the values (raw little-endian bytes of dtype d) as
// a flat JSON list in C order: integers exactly, bool as true/false, floats
// (float16 and float32 widened exactly to float64) as AppendFloatJSON, complex
// numbers as [re, im] pairs.
func AppendValuesJSON(dst []byte, d DType, raw []byte) []byte {
	le := binary.LittleEndian
	size := int(d.ItemSize())
	dst = append(dst, '[')
	for i := 0; size > 0 && i+size <= len(raw); i += size {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		b := raw[i:]
		switch d {
		case Bool:
			dst = strconv.AppendBool(dst, b[0] != 0)
		case Int8:
			dst = strconv.AppendInt(dst, int64(int8(b[0])), 10)
		case Uint8:
			dst = strconv.AppendUint(dst, uint64(b[0]), 10)
		case Int16:
			dst = strconv.AppendInt(dst, int64(int16(le.Uint16(b))), 10)
		case Uint16:
			dst = strconv.AppendUint(dst, uint64(le.Uint16(b)), 10)
		case Int32:
			dst = strconv.AppendInt(dst, int64(int32(le.Uint32(b))), 10)
		case Uint32:
			dst = strconv.AppendUint(dst, uint64(le.Uint32(b)), 10)
		case Int64:
			dst = strconv.AppendInt(dst, int64(le.Uint64(b)), 10)
		case Uint64:
			dst = strconv.AppendUint(dst, le.Uint64(b), 10)
		case Float16:
			dst = AppendFloatJSON(dst, DecodeFloat16(le.Uint16(b)))
		case Float32:
			dst = AppendFloatJSON(dst, float64(math.Float32frombits(le.Uint32(b))))
		case Float64:
			dst = AppendFloatJSON(dst, math.Float64frombits(le.Uint64(b)))
		case Complex64:
			dst = append(dst, '[')
			dst = AppendFloatJSON(dst, float64(math.Float32frombits(le.Uint32(b))))
			dst = append(dst, ", "...)
			dst = AppendFloatJSON(dst, float64(math.Float32frombits(le.Uint32(b[4:]))))
			dst = append(dst, ']')
		case Complex128:
			dst = append(dst, '[')
			dst = AppendFloatJSON(dst, math.Float64frombits(le.Uint64(b)))
			dst = append(dst, ", "...)
			dst = AppendFloatJSON(dst, math.Float64frombits(le.Uint64(b[8:])))
			dst = append(dst, ']')
		}
	}
	return append(dst, ']')
}
