package specreader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func unsafeAt(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }

func leWord(w [8]byte) uint64 { return binary.LittleEndian.Uint64(w[:]) }

// Section 17's table, row by row.
func TestStreamGeometryTable(t *testing.T) {
	f32 := []uint64{480, 640, 3}
	rows := []struct {
		p                                 StreamParams
		slot, writersOff, slotsOff, total uint64
		refused                           string
	}{
		{StreamParams{Capacity: 1024, MaxBytes: 1024, MaxReaders: 16, MaxWriters: 64}, 1088, 6144, 12288, 1126400, ""},
		{StreamParams{Capacity: 4, MaxBytes: 64, MaxReaders: 16, MaxWriters: 64}, 128, 6144, 12288, 16384, ""},
		{StreamParams{Capacity: 8, MaxBytes: 3686400, MaxReaders: 16, MaxWriters: 64, DType: Float32, Shape: f32},
			3686464, 6144, 12288, 29507584, ""},
		{StreamParams{Capacity: 1000, MaxBytes: 100, MaxReaders: 1024, MaxWriters: 1024}, 192, 135168, 200704, 393216, ""},
		{StreamParams{Capacity: 1 << 24, MaxBytes: 65472, MaxReaders: 1, MaxWriters: 1}, 65536, 4224, 8192, 1<<40 + 8192, ""},
		{StreamParams{Capacity: 1<<24 + 1, MaxBytes: 65472, MaxReaders: 1, MaxWriters: 1}, 0, 0, 0, 0, "the ring would exceed 2**40 bytes"},
		{StreamParams{Capacity: 1 << 30, MaxBytes: 1024, MaxReaders: 16, MaxWriters: 64}, 0, 0, 0, 0, "the ring would exceed 2**40 bytes"},
		{StreamParams{Capacity: 1010580540, MaxBytes: 1024, MaxReaders: 16, MaxWriters: 64}, 1088, 6144, 12288,
			ru(12288+1010580540*1088, 4096), ""}, // "at most 1010580540 slots"
		{StreamParams{Capacity: 1010580541, MaxBytes: 1024, MaxReaders: 16, MaxWriters: 64}, 0, 0, 0, 0, "the ring would exceed"},
		{StreamParams{Capacity: 4, MaxBytes: 1 << 31, MaxReaders: 16, MaxWriters: 64, DType: Uint8,
			Shape: []uint64{1 << 15, 1 << 15, 2}}, 0, 0, 0, 0, "max_bytes must be 1 to 2**30"},
		{StreamParams{Capacity: 4, MaxBytes: 1 << 30, MaxReaders: 16, MaxWriters: 64, DType: Uint8,
			Shape: []uint64{1 << 15, 1 << 15, 2}}, 0, 0, 0, 0, "a frame is limited to 2**30 bytes (shape[2] = 2)"},
	}
	for i, r := range rows {
		g, err := ComputeStreamGeometry(r.p)
		if r.refused != "" {
			if !errors.Is(err, ErrArgument) || !strings.Contains(err.Error(), r.refused) {
				t.Errorf("row %d: %v, want a refusal %q", i, err, r.refused)
			}
			continue
		}
		if err != nil {
			t.Errorf("row %d: %v", i, err)
			continue
		}
		if g.SlotSize != r.slot || g.WritersOffset != r.writersOff || g.SlotsOffset != r.slotsOff ||
			g.TotalSize != r.total || g.ReadersOffset != 4096 {
			t.Errorf("row %d: %d %d %d %d, want %d %d %d %d", i, g.SlotSize, g.WritersOffset, g.SlotsOffset,
				g.TotalSize, r.slot, r.writersOff, r.slotsOff, r.total)
		}
	}
}

// Section 17's refusals, in its order: each parameter set breaks two rules
// and the earlier one is reported.
func TestStreamGeometryRefusalOrder(t *testing.T) {
	ok := StreamParams{Capacity: 4, MaxBytes: 24, MaxReaders: 4, MaxWriters: 4}
	mod := func(f func(p *StreamParams)) StreamParams { p := ok; f(&p); return p }
	cases := []struct {
		p    StreamParams
		kind Kind
		text string
	}{
		{mod(func(p *StreamParams) { p.Capacity, p.MaxBytes = 0, 0 }), KindArgument, "capacity must be 1 to 2**30 messages, got 0"},
		{mod(func(p *StreamParams) { p.Capacity = 1<<30 + 1 }), KindArgument, "capacity must be 1 to 2**30 messages, got 1073741825"},
		{mod(func(p *StreamParams) { p.MaxBytes, p.MaxReaders = 1<<30+1, 0 }), KindArgument, "max_bytes must be 1 to 2**30 bytes, got 1073741825"},
		{mod(func(p *StreamParams) { p.MaxReaders, p.MaxWriters = 1025, 0 }), KindArgument, "max_readers must be 1 to 1024"},
		{mod(func(p *StreamParams) { p.MaxWriters, p.Backpressure = 1025, 7 }), KindArgument, "max_writers must be 1 to 1024"},
		{mod(func(p *StreamParams) { p.Backpressure, p.Shape = 2, []uint64{1} }), KindArgument, "backpressure must be block or drop_oldest"},
		{mod(func(p *StreamParams) { p.Shape = []uint64{24} }), KindArgument, "a byte stream has no shape"},
		{mod(func(p *StreamParams) { p.DType = 15 }), KindDtype, "unknown dtype code 15"},
		{mod(func(p *StreamParams) { p.DType, p.Shape = Uint8, make([]uint64, 9) }), KindArgument, "ndim 9 exceeds 8"},
		{mod(func(p *StreamParams) { p.DType, p.Shape = Float32, []uint64{2, 3} }), "", ""},
		{mod(func(p *StreamParams) { p.DType, p.Shape = Float32, []uint64{2, 4} }), KindArgument, "a frame of this dtype and shape is 32 bytes, not 24"},
		{mod(func(p *StreamParams) { p.DType, p.Shape = Float32, []uint64{0, 6} }), KindArgument, "a frame of this dtype and shape is 0 bytes, not 24"},
		{mod(func(p *StreamParams) { p.DType, p.Shape, p.MaxBytes = Int16, nil, 2 }), "", ""}, // a scalar frame
		{mod(func(p *StreamParams) { p.Capacity, p.MaxBytes = 1<<30, 1<<30 }), KindArgument, "the ring would exceed 2**40 bytes"},
	}
	for i, c := range cases {
		_, err := ComputeStreamGeometry(c.p)
		if c.text == "" {
			if err != nil {
				t.Errorf("case %d: %v", i, err)
			}
			continue
		}
		if KindOf(err) != c.kind || !strings.Contains(fmt.Sprint(err), c.text) {
			t.Errorf("case %d: %v, want %s %q", i, err, c.kind, c.text)
		}
	}
}

func TestPeekKind(t *testing.T) {
	page := func(f func(p []byte)) []byte {
		p := newStreamImage(4, 64, 4, 4, false, 0).b[:4096]
		f(p)
		return p
	}
	put := func(p []byte, off int, v uint32) { binary.LittleEndian.PutUint32(p[off:], v) }
	cases := []struct {
		p    []byte
		want SegmentKind
	}{
		{page(func([]byte) {}), KindOfStream},
		{page(func(p []byte) { put(p, 12, 0) }), KindOfStream}, // state is not looked at
		{page(func(p []byte) { put(p, 8, 1) }), KindOfRecord},
		{page(func(p []byte) { put(p, 8, 1); put(p, 28, 77) }), KindOfRecord},
		{page(func(p []byte) { put(p, 28, 1) }), KindOfUnknown}, // a version-2 record: none exists
		{page(func(p []byte) { put(p, 28, 3) }), KindOfUnknown},
		{page(func(p []byte) { put(p, 8, 3) }), KindOfUnknown},
		{page(func(p []byte) { p[7] = 'X' }), KindOfUnknown},
		{page(func([]byte) {})[:4095], KindOfUnknown},
		{nil, KindOfUnknown},
	}
	for i, c := range cases {
		if got := PeekKind(c.p); got != c.want {
			t.Errorf("case %d: %s, want %s", i, got, c.want)
		}
	}
}

// validStream is a small valid image, with every field the checks look at.
func validStream() *streamImage { return newStreamImage(4, 24, 4, 4, false, 0) }

// Section 22, S3 to S19: each refusal names its field, and when two checks
// fail the earlier one is reported (every mutation below breaks its own rule
// and the next one's).
func TestStreamHeaderRefusals(t *testing.T) {
	type mut func(im *streamImage)
	cases := []struct {
		name string
		f    mut
		text string
	}{
		{"S4 record", func(im *streamImage) { im.put32(8, 1); im.put32(12, 0) }, "is a record, not a stream"},
		{"S5 state, magic right", func(im *streamImage) { im.put32(12, 0); im.put32(8, 3) }, "state is 0, not READY"},
		{"S5 state, first byte 0", func(im *streamImage) { im.put32(12, 7); im.b[0] = 0 }, "state is 7, not READY"},
		{"S5 state, foreign magic", func(im *streamImage) { im.put32(12, 7); im.b[0] = 'Y' }, "bad magic"},
		{"S6 magic", func(im *streamImage) { im.b[6] = 'g'; im.put32(8, 3) }, "bad magic: not an xshm segment"},
		{"S7 version", func(im *streamImage) { im.put32(8, 3); im.put32(24, 0) }, "layout version 3 is not supported"},
		{"S7 version 0", func(im *streamImage) { im.put32(8, 0) }, "layout version 0 is not supported"},
		{"S8 header_size", func(im *streamImage) { im.put32(24, 8192); im.put32(28, 1) }, "header_size 8192 is not 4096"},
		{"S9 kind 1", func(im *streamImage) { im.put32(28, 1); im.put32(32, 2) }, "kind 1 is not a stream (2)"},
		{"S9 kind 0", func(im *streamImage) { im.put32(28, 0) }, "kind 0 is not a stream (2)"},
		{"S10 flags", func(im *streamImage) { im.put32(32, 3); im.put32(92, 9) }, "unknown flags 3"},
		{"S10 flags high", func(im *streamImage) { im.put32(32, 0x80000000) }, "unknown flags 2147483648"},
		{"S11 ndim", func(im *streamImage) { im.put32(92, 9) }, "ndim 9 exceeds 8"}, // dtype 0 too: S11 first
		{"S12 byte ndim", func(im *streamImage) { im.put32(92, 1); im.put64(96, 24) }, "a byte stream (dtype 0) has ndim 0"},
		{"S13 dtype", func(im *streamImage) { im.put32(88, 15); im.put64(96, 1) }, "unknown dtype code 15"},
		{"S14 shape, bytes", func(im *streamImage) { im.put64(96, 1); im.put32(160, 0) }, "unused shape entries are not zero"},
		{"S14 shape[7]", func(im *streamImage) { im.put64(96+56, 1) }, "unused shape entries are not zero"},
		{"S14 frame", func(im *streamImage) {
			im.put32(88, uint32(Float32))
			im.put32(92, 2)
			im.put64(96, 2)
			im.put64(104, 3)
			im.put64(112, 1)
		}, "unused shape entries are not zero"},
		{"S15 mutex_size 0", func(im *streamImage) { im.put32(160, 0); im.b[208] = 1 }, "mutex_size 0 does not fit the 64-byte mutex slot"},
		{"S15 mutex_size 65", func(im *streamImage) { im.put32(160, 65) }, "mutex_size 65 does not fit"},
		{"S16 reserved lowest", func(im *streamImage) { im.b[4095] = 1; im.b[300] = 1; im.put32(36, 0) }, "reserved header byte 300 is not zero"},
		{"S17 capacity", func(im *streamImage) { im.put32(36, 0); im.put64(48, 1) }, "impossible geometry: capacity must be 1 to 2**30 messages, got 0"},
		{"S17 max_bytes", func(im *streamImage) { im.put64(40, 0) }, "impossible geometry: max_bytes must be 1 to 2**30 bytes, got 0"},
		{"S17 max_readers", func(im *streamImage) { im.put32(64, 1025) }, "impossible geometry: max_readers must be 1 to 1024"},
		{"S17 max_writers", func(im *streamImage) { im.put32(68, 0) }, "impossible geometry: max_writers must be 1 to 1024"},
		{"S17 max_groups", func(im *streamImage) { im.put32(196, 1025); im.put32(32, 0) }, "impossible geometry: max_groups must be 0 to 1024, got 1025"},
		{"S17 max_groups before backpressure", func(im *streamImage) { im.put32(196, 2000); im.put64(40, 25) }, "max_groups must be 0 to 1024, got 2000"},
		{"S17 frame size", func(im *streamImage) {
			im.put32(88, uint32(Float32))
			im.put32(92, 2)
			im.put64(96, 2)
			im.put64(104, 4)
		}, "impossible geometry: a frame of this dtype and shape is 32 bytes, not 24"},
		{"S17 frame too big", func(im *streamImage) {
			im.put32(88, uint32(Uint8))
			im.put32(92, 3)
			im.put64(96, 1<<15)
			im.put64(104, 1<<15)
			im.put64(112, 2)
		}, "impossible geometry: a frame is limited to 2**30 bytes"},
		{"S17 ring", func(im *streamImage) { im.put32(36, 1<<24+1); im.put64(40, 65472) }, "the ring would exceed 2**40 bytes"},
		{"S18 slot_size", func(im *streamImage) { im.put64(48, 64); im.put64(56, 0) }, "slot_size is 64, the formula gives 128"},
		{"S18 slots_offset", func(im *streamImage) { im.put64(56, 4096); im.put64(72, 0) }, "slots_offset is 4096, the formula gives 8192"},
		{"S18 readers_offset", func(im *streamImage) { im.put64(72, 0); im.put64(80, 0) }, "readers_offset is 0, the formula gives 4096"},
		{"S18 writers_offset", func(im *streamImage) { im.put64(80, 4096); im.put64(16, 0) }, "writers_offset is 4096, the formula gives 4608"},
		{"S18 groups_offset without a table", func(im *streamImage) { im.put64(200, 4608+256); im.put64(16, 0) }, "groups_offset is 4864, the formula gives 0"},
		{"S18 max_groups 1, offsets of none", func(im *streamImage) { im.put32(196, 1) }, "groups_offset is 0, the formula gives 4864"},
		{"S19 total_size", func(im *streamImage) { im.put64(16, 16384) }, "total_size 16384 does not match the layout (12288)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := validStream()
			c.f(im)
			_, err := OpenStreamFile(im.write(t), nil)
			if !errors.Is(err, ErrLayout) || !strings.Contains(fmt.Sprint(err), c.text) {
				t.Fatalf("got %v, want LayoutError %q", err, c.text)
			}
		})
	}
	// The reserved ranges of 18.5, first and last byte of each.
	for _, r := range [][2]int{{208, 256}, {288, 320}, {328, 384}, {408, 448}, {456, 512}, {576, 4096}} {
		for _, off := range []int{r[0], r[1] - 1} {
			im := validStream()
			im.b[off] = 0x80
			_, err := OpenStreamFile(im.write(t), nil)
			want := fmt.Sprintf("reserved header byte %d is not zero", off)
			if !errors.Is(err, ErrLayout) || !strings.Contains(fmt.Sprint(err), want) {
				t.Errorf("byte %d: %v", off, err)
			}
		}
	}
	// S3, and S19's second half: the file's size.
	im := validStream()
	path := im.write(t)
	os.Truncate(path, 4095)
	if _, err := OpenStreamFile(path, nil); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "is 4095 bytes, smaller than the xshm header") {
		t.Errorf("S3: %v", err)
	}
	os.WriteFile(path, im.b[:8192], 0o600)
	if _, err := OpenStreamFile(path, nil); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "segment is truncated: header says 12288 bytes, only 8192 exist") {
		t.Errorf("S19 truncated: %v", err)
	}
	// A longer file is accepted, the excess ignored.
	os.WriteFile(path, append(append([]byte(nil), im.b...), make([]byte, 5000)...), 0o600)
	if s, err := OpenStreamFile(path, nil); err != nil {
		t.Errorf("a longer file: %v", err)
	} else {
		s.Close()
	}
}

// What section 22 leaves unchecked opens: the identity's free fields, every
// control word, the mutex bytes (512..575 whatever mutex_size says), the
// tables, slot headers, and the mutex ABI (a look never locks).
func TestStreamNotChecked(t *testing.T) {
	im := validStream()
	for i := 168; i < 196; i++ {
		im.b[i] = 0xA5
	}
	for _, off := range []uint64{256, 264, 268, 272, 280, 320, 324, 384, 392, 400, 404, 448, 452} {
		im.put32(off, 0xFFFFFFFF)
	}
	for i := 512; i < 576; i++ {
		im.b[i] = 0x5A
	}
	im.put32(160, 1)      // mutex_size 1: bytes 513.. are "past mutex_size", still not checked
	im.put32(164, 0xBEEF) // another ABI: a look opens it
	for i := uint64(4096); i < im.slotsOff; i++ {
		im.b[i] = byte(i)
	}
	im.put64(im.slotsOff, 0xFFFFFFFFFFFFFFFC) // a slot word with tag 0: never stored, not checked
	s, err := OpenStreamFile(im.write(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ev := s.Mutex(); ev.Meaningful {
		t.Errorf("mutex evidence for abi 0xBEEF: %+v", ev)
	}
	v, _ := s.Scan()
	if len(v.Slots) != 1 || v.Slots[0].Status != SlotInvalid {
		t.Errorf("slots %+v", v.Slots)
	}
}

// A rich image: every class of slot word, a lap under drop_oldest, the tables
// with live and dead entries (liveness asked of the kernel, 23.2).
func TestStreamScan(t *testing.T) {
	im := newStreamImage(8, 40, 4, 4, true, 0)
	w0 := im.writer(0, 3, true, 9, 1111) // alive: the test holds its lock byte
	w1 := im.writer(1, 1, true, 2, 2222) // registered, dead (no lock)
	w2old := uint64(1)<<8 | 1            // entry 2's earlier registration, since taken over
	im.writer(2, 2, true, 0, 3333)
	im.writer(3, 5, false, 4, 4444) // freed by a clean close
	// head 12: the ring holds 4..11; 12 and 13 are marks of a claim in progress.
	for x := uint64(4); x < 12; x++ {
		switch x {
		case 5:
			im.mark(x, 3, 1, w1) // ABANDONED
		case 6:
			im.mark(x, 1, 0, w0) // WRITING, writer alive
		case 7:
			im.mark(x, 1, 1, w1) // WRITING, writer dead (no lock)
		case 8:
			im.mark(x, 1, 2, w2old) // WRITING by a registration since taken over: dead
		case 9:
			im.mark(x, 1, 9, w0) // writer_index ≥ max_writers: dead
		default:
			im.commit(x, []byte(fmt.Sprintf("message %d", x)), uint32(1000+x), 0, w0)
		}
	}
	im.commit(10, make([]byte, 40), 1010, 0, w0) // exactly max_bytes
	im.commit(11, nil, 1011, 0, w0)              // empty
	im.put64(256, 12)                            // head
	im.put64(384, 4)                             // dropped
	im.put64(392, 1)                             // abandoned
	im.put32(400, 7)                             // readers_gen
	im.put32(448, 0)                             // owner_pid
	// slot 12 % 8 = 4 and 13 % 8 = 5: overwrite 4 and 5 with marks beyond head (a live claimant).
	im.mark(12, 1, 0, w0)
	im.mark(13, 1, 0, w0)
	im.reader(0, 2, true, 12, 1, 7, 5555) // alive (lock held)
	im.reader(1, 1, true, 6, 3, 0, 6666)  // attached, dead
	im.reader(2, 4, false, 9, 0, 9, 7777) // detached
	name, path := im.writeShm(t)
	holdLock(t, path, im.writersOff+0) // writer 0
	holdLock(t, path, 4096+128*0)      // reader 0
	holdLock(t, path, im.writersOff+64*3)
	before, _ := os.ReadFile(path)

	s, err := OpenStream(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := s.Geometry()
	if g.Backpressure != DropOldest || g.Capacity != 8 || g.MaxBytes != 40 || g.SlotSize != 128 ||
		g.SlotsOffset != 8192 || g.WritersOffset != 4608 || g.TotalSize != 8192+4096 {
		t.Errorf("geometry %+v", g)
	}
	c, _ := s.Counters()
	if c.Head != 12 || c.Dropped != 4 || c.Abandoned != 1 || c.ReadersGen != 7 {
		t.Errorf("counters %+v", c)
	}
	id := s.Identity()
	if id.MutexSize != 40 || id.MutexABI != 0x0101 || id.CreatorPID != 4242 || string(id.CreationID[:15]) != "creation-id-16b" {
		t.Errorf("identity %+v", id)
	}
	readers, _ := s.Readers()
	if r := readers[0]; !r.Attached || !r.Alive || r.Cursor != 12 || r.Lost != 1 || r.Received != 7 || r.PID != 5555 ||
		r.Generation != 2 || r.State != 2<<8|1 {
		t.Errorf("reader 0 %+v", r)
	}
	if r := readers[1]; !r.Attached || r.Alive || r.Cursor != 6 || r.Lost != 3 {
		t.Errorf("reader 1 %+v", r)
	}
	if r := readers[2]; r.Attached || r.Alive || r.Generation != 4 || !r.Used() {
		t.Errorf("reader 2 %+v", r)
	}
	if r := readers[3]; r.Used() {
		t.Errorf("reader 3 %+v", r)
	}
	writers, _ := s.Writers()
	if w := writers[0]; !w.Attached || !w.Alive || w.Sent != 9 || w.PID != 1111 || w.Generation != 3 {
		t.Errorf("writer 0 %+v", w)
	}
	if w := writers[1]; !w.Attached || w.Alive {
		t.Errorf("writer 1 %+v", w)
	}
	if w := writers[3]; w.Attached || w.Alive { // a lock on a free entry is not "alive"
		t.Errorf("writer 3 %+v", w)
	}

	v, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if v.Head != 12 || v.Oldest != 4 || v.NeverWritten != 0 || len(v.Slots) != 8 {
		t.Fatalf("view head %d oldest %d never %d slots %d", v.Head, v.Oldest, v.NeverWritten, len(v.Slots))
	}
	type want struct {
		seq    uint64
		status SlotStatus
		alive  bool
	}
	wants := []want{{6, SlotWriting, true}, {7, SlotWriting, false}, {8, SlotWriting, false}, {9, SlotWriting, false},
		{10, SlotCommitted, false}, {11, SlotCommitted, false}, {12, SlotWriting, true}, {13, SlotWriting, true}}
	for i, w := range wants {
		sv := v.Slots[i]
		if sv.Seq != w.seq || sv.Status != w.status || (sv.Status == SlotWriting && sv.WriterAlive != w.alive) ||
			sv.Slot != w.seq%8 {
			t.Errorf("slot view %d: %+v, want %+v", i, sv, w)
		}
	}
	msgs := v.Messages()
	if len(msgs) != 2 || len(msgs[0].Payload) != 40 || msgs[0].WriterPID != 1010 ||
		msgs[0].TimestampNs != 1767225600000000000+10*1000000 || len(msgs[1].Payload) != 0 || msgs[1].Length != 0 {
		t.Errorf("messages %+v", msgs)
	}
	// A model reader attached at oldest: cursor 4 (head − capacity), where slot
	// 4 holds W(12): lapped (26.3), next = 12 − 8 + 1 = 5 ... then the live hole.
	m, err := s.SimulateOldestReader()
	if err != nil {
		t.Fatal(err)
	}
	if m.Cursor0 != 4 || m.Entry != 2 || m.StoppedAt != "hole" || m.Cursor != 6 || m.Lost != 2 || m.Received != 0 {
		t.Errorf("model %+v", m)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("the look changed the segment")
	}
}

// The model's takes: a dead hole is abandoned and counted lost, a live one
// stops the takes; a lapped cursor jumps as 26.3 says; ABANDONED is skipped
// without asking anyone; a committed length past max_bytes is refused.
func TestStreamModelTakes(t *testing.T) {
	im := newStreamImage(4, 16, 2, 2, true, 0)
	wLive := im.writer(0, 1, true, 0, 1)
	wDead := im.writer(1, 1, true, 0, 2)
	for x := uint64(0); x < 10; x++ {
		im.commit(x, []byte{byte(x)}, 100, 0, wLive)
	}
	im.put64(256, 10)
	im.mark(7, 1, 1, wDead) // a dead writer's hole at 7
	im.mark(8, 3, 1, wDead) // abandoned
	im.mark(9, 1, 0, wLive) // a live writer's hole at 9
	path := im.write(t)
	holdLock(t, path, im.writersOff)
	s, err := OpenStreamFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mem, keep := s.privateCopy()
	_ = keep
	// Far behind: slot 1 holds W(9), so cursor 1 is lapped (26.3): next =
	// head − capacity + 1 = 7, so 1..6 are lost (6 = head − capacity too, though
	// its slot still holds it). Then 7 is a dead hole: abandoned, lost; 8 is
	// abandoned: lost; 9 a live hole: the takes stop there.
	r := &ReaderModel{Cursor: 1}
	msg, stop, err := mem.take(r, "x")
	if msg != nil || stop != "hole" || err != nil || r.Cursor != 9 || r.Lost != 8 || r.Received != 0 {
		t.Errorf("msg %+v stop %q err %v r %+v", msg, stop, err, r)
	}
	if c := mem.counters(); c.Abandoned != 1 || c.DataEpoch != 1 {
		t.Errorf("counters after the abandon: %+v", c)
	}
	// A cursor at 6: message 6 is committed and taken.
	r = &ReaderModel{Cursor: 6}
	if msg, _, _ = mem.take(r, "x"); msg == nil || msg.Seq != 6 || !bytes.Equal(msg.Payload, []byte{6}) || r.Received != 1 {
		t.Errorf("take at 6: %+v %+v", msg, r)
	}
	// A committed length past max_bytes, the word unchanged: refused.
	im.put64(im.slot(6)+8, 17)
	path2 := im.write(t)
	s2, err := OpenStreamFile(path2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	mem2, _ := s2.privateCopy()
	r = &ReaderModel{Cursor: 6}
	if _, _, err = mem2.take(r, "x"); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "message 6 claims 17 bytes, more than max_bytes") || r.Cursor != 6 {
		t.Errorf("corrupt length: %v, cursor %d", err, r.Cursor)
	}
	if v, _ := s2.Slot(6 % 4); !v.CorruptLength || v.Payload != nil {
		t.Errorf("slot view of a corrupt length: %+v", v)
	}
}

// The reader entry's start (offset 24) and sleeping (offset 32), the writer
// entry's sleeping (offset 32), as 19.1, 19.2 and 23.4 place them, and 28.2's
// check from outside.
func TestStreamEntriesStartAndSleeping(t *testing.T) {
	im := newStreamImage(4, 16, 4, 2, true, 0)
	im.reader(0, 3, true, 12, 1, 7, 5555) // attached at 4: 7 + 1 = 12 − 4
	im.put64(4096+24, 4)
	im.put32(4096+32, 3)                  // counted in data_waiters
	im.reader(1, 1, true, 10, 0, 5, 6666) // attached at 6: received stored, cursor not yet
	im.put64(4096+128+24, 6)
	im.reader(2, 2, false, 0, 0, 0, 7777) // free, and a count nobody took back
	im.put32(4096+256+32, 2)
	im.writer(0, 5, true, 9, 1111)
	im.put32(im.writersOff+32, 5) // counted in space_waiters
	im.put32(268, 1)              // data_waiters
	im.put32(324, 1)              // space_waiters
	s, err := OpenStreamFile(im.write(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rs, _ := s.Readers()
	if r := rs[0]; r.Start != 4 || r.Sleeping != 3 || r.CountGap() != 0 || r.Alive {
		t.Errorf("reader 0 %+v gap %d", r, r.CountGap())
	}
	if r := rs[1]; r.Start != 6 || r.Sleeping != 0 || r.CountGap() != 1 {
		t.Errorf("reader 1 %+v gap %d", r, r.CountGap())
	}
	if r := rs[2]; r.Attached || r.Sleeping != 2 {
		t.Errorf("reader 2 %+v", r)
	}
	ws, _ := s.Writers()
	if w := ws[0]; w.Sleeping != 5 || w.Generation != 5 || w.Sent != 9 {
		t.Errorf("writer 0 %+v", w)
	}
	if c, _ := s.Counters(); c.DataWaiters != 1 || c.SpaceWaiters != 1 {
		t.Errorf("counters %+v", c)
	}
}

// 26.2's refusals of corrupt slots, each leaving the cursor and the counts
// where they were, so that the next take refuses again (22); and 26.3's lap
// from a word newer than the head loaded.
func TestStreamModelRefusesCorruptSlots(t *testing.T) {
	open := func(im *streamImage) streamMem {
		s, err := OpenStreamFile(im.write(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		mem, keep := s.privateCopy()
		t.Cleanup(func() { runtime.KeepAlive(keep) })
		return mem
	}
	refusedTwice := func(name string, mem streamMem, cursor uint64, text string) {
		t.Helper()
		r := &ReaderModel{Cursor: cursor, Lost: 2, Received: 3}
		for i := 0; i < 2; i++ {
			msg, stop, err := mem.take(r, "x")
			if msg != nil || stop != "" || !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), text) {
				t.Errorf("%s, take %d: %+v %q %v, want LayoutError %q", name, i, msg, stop, err, text)
			}
			if r.Cursor != cursor || r.Lost != 2 || r.Received != 3 {
				t.Errorf("%s, take %d: the refusal moved the reader: %+v", name, i, r)
			}
		}
	}
	im := newStreamImage(4, 16, 2, 2, true, 0)
	w := im.writer(0, 1, true, 0, 1)
	for x := uint64(0); x < 2; x++ {
		im.commit(x, []byte{byte(x)}, 100, 0, w)
	}
	im.put64(256, 4)
	im.put64(im.slot(2), 6<<2)   // tag 0, x = 6 > cursor 2: not a lap, corrupt
	im.put64(im.slot(3), 1<<2)   // tag 0, x = 1 < cursor 3: not "empty", corrupt
	im.put64(im.slot(1), 6<<2|2) // C(6) in slot 1: a later number of another slot
	mem := open(im)
	refusedTwice("tag 0 ahead", mem, 2, "slot of message 2 holds a word with no tag, for message 6")
	refusedTwice("tag 0 behind", mem, 3, "slot of message 3 holds a word with no tag, for message 1")
	refusedTwice("another slot's number", mem, 1, "slot of message 1 holds a word for message 6")

	// Frames: a committed length other than max_bytes, short or long.
	fr := newStreamImage(4, 16, 2, 2, false, uint32(Uint8), 16)
	w = fr.writer(0, 1, true, 0, 1)
	fr.commit(0, make([]byte, 16), 100, 0, w)
	fr.commit(1, make([]byte, 15), 100, 0, w)
	fr.commit(2, make([]byte, 16), 100, 0, w)
	fr.put64(fr.slot(2)+8, 17)
	fr.put64(256, 3)
	mem = open(fr)
	r := &ReaderModel{}
	if msg, _, err := mem.take(r, "x"); err != nil || msg == nil || msg.Length != 16 {
		t.Errorf("a whole frame: %+v %v", msg, err)
	}
	refusedTwice("short frame", mem, 1, "message 1 claims 15 bytes, not the frame's 16")
	refusedTwice("long frame", mem, 2, "message 2 claims 17 bytes, more than max_bytes")
	if v := mem.readSlot(1, true); !v.CorruptLength || v.Payload != nil {
		t.Errorf("the look at a short frame: %+v", v)
	}

	// A lap seen before its claim stored head: slot 1 holds W(9) while head is
	// still 5, so next = max(5 − 4 + 1, 1 + 1, 9 − 4 + 1) = 6 (26.3), 1..5 lost.
	lp := newStreamImage(4, 16, 2, 2, true, 0)
	w = lp.writer(0, 1, true, 0, 1)
	for x := uint64(2); x < 5; x++ {
		lp.commit(x, []byte{byte(x)}, 100, 0, w)
	}
	lp.mark(9, 1, 0, w)
	lp.put64(256, 5)
	mem = open(lp)
	r = &ReaderModel{Cursor: 1}
	msg, stop, err := mem.take(r, "x")
	if msg != nil || stop != "empty" || err != nil || r.Cursor != 6 || r.Lost != 5 {
		t.Errorf("lap past a stale head: %+v %q %v %+v", msg, stop, err, r)
	}
}

// 26.1 step 3: the model's attach stores start with the cursor.
func TestStreamModelAttachStoresStart(t *testing.T) {
	im := newStreamImage(4, 16, 2, 2, true, 0)
	w := im.writer(0, 1, true, 0, 1)
	for x := uint64(0); x < 10; x++ {
		im.commit(x, []byte{byte(x)}, 100, 0, w)
	}
	im.put64(256, 10)
	s, err := OpenStreamFile(im.write(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mem, keep := s.privateCopy()
	defer runtime.KeepAlive(keep)
	m, err := mem.simulateOldest("x", 0x0101)
	if err != nil {
		t.Fatal(err)
	}
	e := mem.reader(m.Entry)
	if m.Cursor0 != 6 || e.Start != 6 || e.Cursor != 10 || e.Received != 4 || e.CountGap() != 0 || !e.Attached {
		t.Errorf("model %+v, entry %+v", m, e)
	}
}

// The attach model's recovery (24.2) on hand-built states, and its refusal of
// another mutex ABI, and of a held mutex.
func TestStreamModelRecovery(t *testing.T) {
	build := func(f func(im *streamImage, w uint64)) *Stream {
		im := newStreamImage(4, 16, 2, 2, true, 0)
		w := im.writer(0, 1, true, 0, 1)
		for x := uint64(0); x < 4; x++ {
			im.commit(x, []byte{byte(x)}, 100, 0, w)
		}
		im.put64(256, 4)
		im.put32(512, 0x40000000) // FUTEX_OWNER_DIED, no TID
		f(im, w)
		s, err := OpenStreamFile(im.write(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	// Died after marking 4 and 5 (overwriting 0 and 1 with no reader), claim_seq
	// still set for 5: dropped settles to claim_dropped, 4 and 5 are abandoned,
	// head goes to 6.
	s := build(func(im *streamImage, w uint64) {
		im.mark(4, 1, 0, w)
		im.mark(5, 1, 0, w)
		im.put64(280, 2) // claim_dropped
		im.put64(272, 6) // claim_seq = x + 1
		im.put64(384, 1) // dropped (stored for 4, not yet for 5)
	})
	m, err := s.SimulateOldestReader()
	if err != nil {
		t.Fatal(err)
	}
	if !m.Recovered || m.Head != 6 || m.Cursor0 != 2 || m.Counters.Dropped != 2 || m.Counters.Abandoned != 2 ||
		m.Counters.Recoveries != 1 || m.Counters.ClaimSeq != 0 || len(m.Messages) != 2 || m.Lost != 2 ||
		m.Counters.ReadersGen != 2 {
		t.Errorf("model %+v", m)
	}
	// Died before the mark of the pending overwrite: dropped untouched.
	s = build(func(im *streamImage, w uint64) {
		im.put64(280, 1)
		im.put64(272, 5)
	})
	if m, _ = s.SimulateOldestReader(); m.Head != 4 || m.Counters.Dropped != 0 || m.Counters.Abandoned != 0 || len(m.Messages) != 4 {
		t.Errorf("before the mark: %+v", m)
	}
	// Another mutex ABI: the attach is refused (26.1), the look is not.
	s = build(func(im *streamImage, w uint64) { im.put32(164, 0x0202) })
	if _, err = s.SimulateOldestReader(); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "another C library or architecture") {
		t.Errorf("abi: %v", err)
	}
	// A live holder: the model does not wait.
	s = build(func(im *streamImage, w uint64) { im.put32(512, 1234) })
	if _, err = s.SimulateOldestReader(); !errors.Is(err, ErrTimeout) {
		t.Errorf("held mutex: %v", err)
	}
	// No free reader entry, the attached ones alive: Error; dead: reaped.
	im := newStreamImage(4, 16, 1, 1, false, 0)
	im.reader(0, 1, true, 0, 0, 0, 9)
	path := im.write(t)
	s2, _ := OpenStreamFile(path, nil)
	defer s2.Close()
	if m, err = s2.SimulateOldestReader(); err != nil || m.Reaped != 1 || m.Counters.Reaped != 1 || m.Entry != 0 {
		t.Errorf("reap: %+v %v", m, err)
	}
	holdLock(t, path, 4096)
	if _, err = s2.SimulateOldestReader(); KindOf(err) != KindError {
		t.Errorf("a full table: %v", err)
	}
}

// The seqlock read of 26.2 under a writer that overwrites the slots while the
// look copies them (drop_oldest, nobody gating): every message reported is
// whole. The writer follows 25.3 step 8 and 25.4 on a writable mapping of the
// same file (one writer, no mutex: a test-only writer).
func TestStreamScanUnderOverwriter(t *testing.T) {
	const capacity, maxBytes = 4, 256
	im := newStreamImage(capacity, maxBytes, 1, 1, true, 0)
	wst := im.writer(0, 1, true, 0, uint32(os.Getpid()))
	name, path := im.writeShm(t)
	fd, err := syscall.Open(path, syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	wmem, err := syscall.Mmap(fd, 0, len(im.b), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	syscall.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(wmem)
	wbase := &wmem[0]
	payloadOf := func(x uint64) []byte {
		n := 8 + x%(maxBytes-8)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(x*7 + uint64(i))
		}
		return p
	}
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		x := uint64(0)
		for {
			select {
			case <-stop:
				done <- x
				return
			default:
			}
			s := im.slotsOff + (x%capacity)*im.slotSize
			p := unsafeAt(wbase)
			store64(p, s+slWriterState, wst)
			store64(p, s+slWord, x<<2|1) // W(x), release (seq_cst)
			pl := payloadOf(x)
			store64(p, s+slLength, uint64(len(pl)))
			store64(p, s+slTimestamp, x)
			store64(p, s+slWriterPID, uint64(os.Getpid()))
			var w [8]byte
			for i := 0; i < len(pl); i += 8 {
				w = [8]byte{}
				copy(w[:], pl[i:])
				store64(p, s+slPayload+uint64(i), leWord(w))
			}
			cas64(p, s+slWord, x<<2|1, x<<2|2) // C(x)
			store64(p, soHead, x+1)
			x++
		}
	}()
	s, err := OpenStream(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The negative control: the same copy without the word's re-check.
	unchecked := func(i uint64) (seq uint64, ok, whole bool) {
		p := s.mem.slot(i)
		w := load64(p, slWord)
		if w&3 != tagCommitted {
			return 0, false, false
		}
		seq = w >> 2
		length := load64(p, slLength)
		ts := load64(p, slTimestamp)
		if length > maxBytes {
			return seq, true, false
		}
		buf := make([]byte, length)
		copyAtomic(buf, at(p, slPayload), length)
		return seq, true, ts == seq && bytes.Equal(buf, payloadOf(seq))
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	seen, discarded, tears := 0, 0, 0
	for time.Now().Before(deadline) {
		for i := uint64(0); i < capacity; i++ {
			if _, ok, whole := unchecked(i); ok && !whole {
				tears++
			}
		}
		v, _ := s.Scan()
		for _, m := range v.Slots {
			discarded += m.Discarded
			if m.Status != SlotCommitted {
				continue
			}
			seen++
			if m.TimestampNs != int64(m.Seq) || !bytes.Equal(m.Payload, payloadOf(m.Seq)) || m.Length != uint64(len(m.Payload)) {
				t.Fatalf("torn copy of message %d: length %d, ts %d", m.Seq, m.Length, m.TimestampNs)
			}
		}
	}
	close(stop)
	sent := <-done
	t.Logf("%d messages sent, %d consistent copies checked, %d copies discarded by the re-check; "+
		"without the re-check, %d torn copies", sent, seen, discarded, tears)
	if seen == 0 {
		t.Fatal("no committed message was ever seen")
	}
	if runtime.NumCPU() > 1 && tears == 0 {
		t.Error("the negative control never tore: the test cannot tell a checked copy from an unchecked one")
	}
}

// Random corruption of a valid image: the opener refuses or the look works;
// nothing panics, nothing reads outside the mappings.
func TestStreamRandomCorruption(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	base := newStreamImage(4, 24, 2, 2, true, uint32(Uint8), 24)
	w := base.writer(0, 1, true, 0, 1)
	for x := uint64(0); x < 6; x++ {
		base.commit(x, bytes.Repeat([]byte{byte(x)}, 24), 1, 0, w)
	}
	base.put64(256, 6)
	dir := t.TempDir()
	for i := 0; i < 400; i++ {
		im := *base
		im.b = append([]byte(nil), base.b...)
		for k := rng.Intn(4) + 1; k > 0; k-- {
			off := rng.Intn(len(im.b))
			if rng.Intn(3) == 0 {
				off = rng.Intn(600)
			}
			im.b[off] ^= byte(1 << rng.Intn(8))
		}
		path := fmt.Sprintf("%s/c%d.seg", dir, i)
		os.WriteFile(path, im.b, 0o600)
		s, err := OpenStreamFile(path, nil)
		if err != nil {
			if !errors.Is(err, ErrLayout) {
				t.Fatalf("case %d: %v", i, err)
			}
			continue
		}
		s.Scan()
		s.Readers()
		s.Writers()
		s.SimulateOldestReader()
		s.Close()
	}
}

// A record opener meeting a stream names it (section 8 item 6, 16), and the
// stream opener meeting a record names that (S4); OpenAny dispatches.
func TestStreamRecordCrossOpen(t *testing.T) {
	im := validStream()
	path := im.write(t)
	if _, err := OpenFile(path, nil); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "it is a stream (layout version 2), not a record") {
		t.Errorf("record opener on a stream: %v", err)
	}
	h, err := OpenAnyFile(path, nil)
	if _, ok := h.(*Stream); err != nil || !ok {
		t.Errorf("OpenAny on a stream: %T %v", h, err)
	} else {
		h.Close()
	}
	im.put32(28, 1) // version 2, kind 1: the record opener's other text
	path = im.write(t)
	if _, err := OpenFile(path, nil); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "layout version 2 is not supported") {
		t.Errorf("record opener on kind 1: %v", err)
	}
	rec := tempCopy(t, "published-float64-4.seg")
	if _, err := OpenStreamFile(rec, nil); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "is a record, not a stream") {
		t.Errorf("stream opener on a record: %v", err)
	}
	h, err = OpenAnyFile(rec, nil)
	if _, ok := h.(*Segment); err != nil || !ok {
		t.Errorf("OpenAny on a record: %T %v", h, err)
	} else {
		h.Close()
	}
}

// 21.3 steps 2 and 3 for a stream: a creator holding LOCK_EX (S2a), a file
// that stays empty (S2b).
func TestStreamReadyWait(t *testing.T) {
	t.Run("S2a", func(t *testing.T) {
		t.Parallel()
		name, path := validStream().writeShm(t)
		fd, _ := syscall.Open(path, syscall.O_RDONLY, 0)
		defer syscall.Close(fd)
		syscall.Flock(fd, syscall.LOCK_EX)
		start := time.Now()
		_, err := OpenStream(name, &Options{Timeout: 100 * time.Millisecond})
		if !errors.Is(err, ErrTimeout) || time.Since(start) < 2100*time.Millisecond {
			t.Errorf("%v after %v", err, time.Since(start))
		}
	})
	t.Run("S2b", func(t *testing.T) {
		t.Parallel()
		name := uniqueName("empty")
		path := ShmDir + "/" + name
		os.WriteFile(path, nil, 0o600)
		t.Cleanup(func() { os.Remove(path) })
		_, err := OpenStream(name, nil)
		if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "empty file") {
			t.Errorf("%v", err)
		}
	})
	t.Run("S1", func(t *testing.T) {
		t.Parallel()
		if _, err := OpenStream(uniqueName("missing"), nil); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%v", err)
		}
		if _, err := OpenStream("a/b", nil); !errors.Is(err, ErrArgument) {
			t.Errorf("%v", err)
		}
	})
}

// A closed handle refuses every call.
func TestStreamClosed(t *testing.T) {
	s, err := OpenStreamFile(validStream().write(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if _, err := s.Scan(); err == nil {
		t.Error("Scan after Close")
	}
	if _, err := s.Readers(); err == nil {
		t.Error("Readers after Close")
	}
	if _, err := s.SimulateOldestReader(); err == nil {
		t.Error("model after Close")
	}
}

// The group table (19.3): 17's offsets with max_groups, the entries decoded
// as 26.8.5 lists them, S18 for groups_offset, and a member entry's hold and
// group (19.1).
func TestStreamGroupTable(t *testing.T) {
	for _, c := range []struct{ groups, groupsOff, slotsOff, total uint64 }{
		{0, 0, 8192, 12288}, {2, 4864, 8192, 12288}, {16, 4864, 8192, 12288}, {18, 4864, 12288, 16384},
		{1024, 4864, 204800, 208896},
	} {
		g, err := ComputeStreamGeometry(StreamParams{Capacity: 8, MaxBytes: 100, MaxReaders: 4, MaxWriters: 4,
			MaxGroups: c.groups})
		if err != nil || g.GroupsOffset != c.groupsOff || g.SlotsOffset != c.slotsOff || g.TotalSize != c.total {
			t.Errorf("max_groups %d: %+v %v", c.groups, g, err)
		}
	}
	im := newGroupStreamImage(8, 100, 4, 4, 2, false, 0)
	if im.groupsOff != 4864 || im.slotsOff != 8192 {
		t.Fatalf("image geometry %d %d", im.groupsOff, im.slotsOff)
	}
	g1 := im.groupsOff + 192
	im.put64(g1+0, 9)  // cursor
	im.put64(g1+8, 5)  // received
	im.put64(g1+16, 2) // lost
	im.put64(g1+24, 1) // skipped
	im.put64(g1+32, 1) // start: 5 + 2 + 1 = 9 - 1
	im.put32(g1+64+16, 0x92)
	im.put64(g1+128, 1) // state: active
	im.put32(g1+136, 1) // generation
	im.put32(g1+140, 7) // name_len
	copy(im.b[g1+152:], "workers")
	im.put64(g1+144, 1767225600000000000)
	im.reader(0, 1, true, 3, 1, 2, 77) // a member: its own cursor stays where it attached
	im.put32(4096+88, 2)               // group 1 + 1
	im.put64(4096+48, 9<<2|1)          // hold: a copy from 9, in progress
	im.reader(1, 1, false, 0, 0, 0, 78)
	im.put32(4096+128+88, 2) // closed: names it, not attached
	im.put64(4096+128+40, 4) // skipped
	s, err := OpenStreamFile(im.write(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gs, err := s.Groups()
	if err != nil || len(gs) != 2 {
		t.Fatalf("%v %v", gs, err)
	}
	if gs[0].Active || gs[0].Name != "" || gs[0].Members != 0 || gs[0].Holding != -1 {
		t.Errorf("free entry 0: %+v", gs[0])
	}
	e := gs[1]
	if !e.Active || e.Name != "workers" || e.Cursor != 9 || e.Start != 1 || e.Received != 5 || e.Lost != 2 ||
		e.Skipped != 1 || e.Members != 1 || e.AliveMembers != 0 || e.Holding != 0 || e.CountGap() != 0 ||
		e.Generation != 1 || e.CreatedNs != 1767225600000000000 {
		t.Errorf("group 1: %+v", e)
	}
	rs, _ := s.Readers()
	if r := rs[0]; r.Group != 2 || !r.IsMember() || r.Hold != 9<<2|1 || !r.Attached {
		t.Errorf("member entry: %+v", r)
	}
	if r := rs[1]; r.Group != 2 || r.Skipped != 4 || r.Attached {
		t.Errorf("closed member entry: %+v", r)
	}
	// S18: groups_offset off by one line.
	im.put64(200, 4864+64)
	if _, err := OpenStreamFile(im.write(t), nil); !errors.Is(err, ErrLayout) ||
		!strings.Contains(err.Error(), "groups_offset is 4928, the formula gives 4864") {
		t.Errorf("S18: %v", err)
	}
	// A name_len past 40 is read as 40 (19.3).
	im.put64(200, 4864)
	im.put32(g1+140, 1000)
	s2, err := OpenStreamFile(im.write(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if gs, _ := s2.Groups(); len(gs[1].Name) != 40 {
		t.Errorf("name_len 1000: %q", gs[1].Name)
	}
}

// 26.2 step 5: A(c) with cancelled = c + 1 is a dropped claim (skipped); with
// any other cancelled it is a loss.
func TestStreamModelDroppedClaim(t *testing.T) {
	im := newStreamImage(4, 16, 2, 2, false, 0)
	w := im.writer(0, 1, true, 0, 1)
	im.commit(0, []byte{0}, 100, 0, w)
	im.mark(1, 3, 0, w)
	im.put64(im.slot(1)+40, 2) // cancelled = 1 + 1
	im.mark(2, 3, 0, w)
	im.put64(im.slot(2)+40, 7) // stale: not 3
	im.commit(3, []byte{3}, 100, 0, w)
	im.put64(256, 4)
	s, err := OpenStreamFile(im.write(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := s.SimulateOldestReader()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Messages) != 2 || m.Skipped != 1 || m.Lost != 1 || m.Received != 2 || m.Cursor != 4 ||
		m.Counters.Abandoned != 0 {
		t.Errorf("model %+v", m)
	}
}

// 26.8.3 from 26.1 step 3: an attach that reuses the entry of a member that
// died in a step finishes the step in its group first; every case of the
// recovery keeps received + lost + skipped = cursor - start.
func TestStreamModelGroupRecovery(t *testing.T) {
	const c = 5 // the group cursor the step started from; start 0, 5 counted before it
	cases := []struct {
		name                           string
		step, cursor, received, lost   uint64
		wantCursor, wantRecv, wantLost uint64
		wantSkipped                    uint64
	}{
		{"copy, cursor not moved: lost", 1, c, 3, 1, c + 1, 3, 2, 1},
		{"copy, cursor moved, counter not", 1, c + 1, 3, 1, c + 1, 3, 2, 1},
		{"copy, cursor and counter moved", 1, c + 1, 4, 1, c + 1, 3, 2, 1},
		{"lose 3, nothing moved: redone later", 2, c, 3, 1, c, 3, 1, 1},
		{"lose 3, cursor moved", 2, c + 3, 3, 1, c + 3, 3, 4, 1},
		{"skip, cursor moved, counter stored", 3, c + 1, 3, 1, c + 1, 3, 1, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			im := newGroupStreamImage(8, 16, 2, 2, 1, false, 0)
			g := im.groupsOff
			im.put64(g+0, tc.cursor)
			im.put64(g+8, tc.received)
			im.put64(g+16, tc.lost)
			skipped := uint64(1)
			if tc.step == 3 && tc.cursor != c {
				skipped = 2 // the skip step stored its counter
			}
			im.put64(g+24, skipped)
			im.put64(g+128, 1)
			im.put32(g+140, 1)
			im.b[g+152] = 'q'
			im.reader(0, 1, false, 0, 0, 0, 9) // reaped: free, its hold and group kept
			im.put32(4096+88, 1)
			im.put64(4096+48, c<<2|tc.step)
			im.put64(256, 8)
			s, err := OpenStreamFile(im.write(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			mem, keep := s.privateCopy()
			_ = keep
			m, err := mem.simulateOldest("x", 0x0101)
			if err != nil {
				t.Fatal(err)
			}
			e := mem.group(0)
			if m.GroupRecovered != 0 || e.Cursor != tc.wantCursor || e.Received != tc.wantRecv ||
				e.Lost != tc.wantLost || e.Skipped != tc.wantSkipped || e.CountGap() != 0 || e.Holding != -1 {
				t.Errorf("recovered %d, group %+v", m.GroupRecovered, e)
			}
			if r := mem.reader(0); r.Group != 0 || r.Hold != 0 || m.Entry != 0 {
				t.Errorf("entry after the attach: %+v (entry %d)", r, m.Entry)
			}
		})
	}
}
