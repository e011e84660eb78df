package specreader

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// errorKinds maps the manifest's error classes to this package's kinds.
var errorKinds = map[string]Kind{
	"LayoutError":     KindLayout,
	"TornRecordError": KindTorn,
	"ArgumentError":   KindArgument,
}

func wantUint(t *testing.T, what, want string, got uint64) {
	t.Helper()
	w, err := strconv.ParseUint(want, 10, 64)
	if err != nil {
		t.Fatalf("%s: bad manifest value %q", what, want)
	}
	if got != w {
		t.Errorf("%s = %d, manifest says %d", what, got, w)
	}
}

func wantErr(t *testing.T, err error, row manifestRow) {
	t.Helper()
	kind, ok := errorKinds[row["error"]]
	if !ok {
		t.Fatalf("manifest error class %q has no mapping", row["error"])
	}
	if err == nil {
		t.Fatalf("no error, manifest says %s (%q)", row["error"], row["error_text"])
	}
	if got := KindOf(err); got != kind {
		t.Errorf("error kind %q (%v), manifest says %s", got, err, row["error"])
	}
	if !strings.Contains(err.Error(), row["error_text"]) {
		t.Errorf("error %q does not contain the reference's text %q", err, row["error_text"])
	}
}

// checkGeometry checks dtype, shape, backup, seq, epoch and recoveries.
func checkHeader(t *testing.T, s *Segment, row manifestRow) {
	t.Helper()
	g := s.Geometry()
	if g.DType.String() != row["dtype"] {
		t.Errorf("dtype %s, manifest says %s", g.DType, row["dtype"])
	}
	if g.ShapeString() != row["shape"] {
		t.Errorf("shape %s, manifest says %s", g.ShapeString(), row["shape"])
	}
	if b := map[bool]string{true: "1", false: "0"}[g.Backup]; b != row["backup"] {
		t.Errorf("backup %s, manifest says %s", b, row["backup"])
	}
	wantUint(t, "header seq", row["seq"], s.Seq())
	wantUint(t, "epoch", row["epoch"], uint64(s.Epoch()))
	wantUint(t, "recoveries", row["recoveries"], uint64(s.Recoveries()))
}

func checkRow(t *testing.T, row manifestRow, open func() (*Segment, error)) {
	s, err := open()
	if row["stage"] == "open" {
		if err == nil {
			s.Close()
		}
		wantErr(t, err, row)
		return
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	checkHeader(t, s, row)
	snap, err := s.Read()
	if row["stage"] == "read" {
		wantErr(t, err, row)
		return
	}
	if row["stage"] != "ok" {
		t.Fatalf("unknown stage %q", row["stage"])
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	wantUint(t, "read seq", row["read_seq"], snap.Seq)
	wantUint(t, "counter", row["counter"], snap.Counter)
	wantUint(t, "timestamp_ns", row["timestamp_ns"], uint64(snap.TimestampNs))
	wantUint(t, "writer_pid", row["writer_pid"], uint64(snap.WriterPID))
	if string(snap.Message) != row["message"] {
		t.Errorf("message %q, manifest says %q", snap.Message, row["message"])
	}
	if got := hex.EncodeToString(snap.Values); got != row["values"] {
		t.Errorf("values %s, manifest says %s", got, row["values"])
	}
	if uint64(len(snap.Values)) != s.Geometry().ValuesSize {
		t.Errorf("%d value bytes, values_size %d", len(snap.Values), s.Geometry().ValuesSize)
	}
}

// TestVectors checks every row of segments.tsv that a reader can check, once
// by name (a copy in /dev/shm) and once by path (a copy in a temp dir). It
// also checks that opening and reading change no byte of the segment.
// The `writer` and `writer_error_text` columns are writer-side: skipped.
func TestVectors(t *testing.T) {
	rows := readManifest(t)
	if len(rows) == 0 {
		t.Fatal("empty manifest")
	}
	listed := map[string]bool{}
	for _, row := range rows {
		file := row["file"]
		listed[file] = true
		t.Run(strings.TrimSuffix(file, ".seg"), func(t *testing.T) {
			t.Run("by-name", func(t *testing.T) {
				name, path := shmCopy(t, file)
				before, _ := os.ReadFile(path)
				checkRow(t, row, func() (*Segment, error) { return Open(name, nil) })
				checkRow(t, row, func() (*Segment, error) { return Open("/"+name, &Options{NoAlias: true}) })
				if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
					t.Errorf("the reader changed the segment")
				}
			})
			t.Run("by-path", func(t *testing.T) {
				path := tempCopy(t, file)
				before, _ := os.ReadFile(path)
				checkRow(t, row, func() (*Segment, error) { return OpenFile(path, nil) })
				if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
					t.Errorf("the reader changed the segment")
				}
			})
		})
	}
	files, _ := filepath.Glob(filepath.Join(vectorsDir, "*.seg"))
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s has no manifest row", filepath.Base(f))
		}
	}
}
