package specreader

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The stream vectors (LAYOUT.md Part II, introduction, and section 13):
// tests/vectors/streams/*.seg, listed in tests/vectors/streams/streams.tsv.
const streamVectorsDir = vectorsDir + "/streams"

var streamErrorKinds = map[string]Kind{
	"LayoutError":      KindLayout,
	"ArgumentError":    KindArgument,
	"WaitTimeoutError": KindTimeout,
	"Error":            KindError,
}

func wantStreamErr(t *testing.T, err error, row manifestRow) {
	t.Helper()
	kind, ok := streamErrorKinds[row["error"]]
	if !ok {
		t.Fatalf("manifest error class %q has no mapping", row["error"])
	}
	if err == nil {
		t.Fatalf("no error, manifest says %s (%q)", row["error"], row["error_text"])
	}
	if got := KindOf(err); got != kind {
		t.Errorf("error kind %q (%v), manifest says %s", got, err, row["error"])
	}
	if row["error_text"] != "-" && !strings.Contains(err.Error(), row["error_text"]) {
		t.Errorf("error %q does not contain the reference's text %q", err, row["error_text"])
	}
}

// parseMessages reads the manifest's `messages`: seq:writer_pid:timestamp_ns:payload-hex ...
func parseMessages(t *testing.T, s string) []Message {
	t.Helper()
	if s == "-" || s == "" {
		return nil
	}
	var out []Message
	for _, f := range strings.Fields(s) {
		parts := strings.Split(f, ":")
		if len(parts) != 4 {
			t.Fatalf("bad message %q", f)
		}
		seq, err1 := strconv.ParseUint(parts[0], 10, 64)
		pid, err2 := strconv.ParseUint(parts[1], 10, 32)
		ts, err3 := strconv.ParseInt(parts[2], 10, 64)
		payload, err4 := hex.DecodeString(parts[3])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			t.Fatalf("bad message %q", f)
		}
		out = append(out, Message{Seq: seq, Length: uint64(len(payload)), TimestampNs: ts, WriterPID: uint32(pid),
			Payload: payload})
	}
	return out
}

func fmtMessages(ms []Message) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%d:%d:%d:%x ", m.Seq, m.WriterPID, m.TimestampNs, m.Payload)
	}
	return strings.TrimSpace(b.String())
}

func checkStreamGeometry(t *testing.T, s *Stream, row manifestRow) {
	t.Helper()
	g := s.Geometry()
	for _, c := range []struct{ col, got string }{
		{"backpressure", g.Backpressure.String()},
		{"capacity", fmt.Sprint(g.Capacity)},
		{"max_bytes", fmt.Sprint(g.MaxBytes)},
		{"max_readers", fmt.Sprint(g.MaxReaders)},
		{"max_writers", fmt.Sprint(g.MaxWriters)},
		{"max_groups", fmt.Sprint(g.MaxGroups)},
		{"dtype", g.DTypeName()},
		{"shape", g.ShapeString()},
		{"head_open", fmt.Sprint(s.Head())},
	} {
		if c.col == "max_groups" && row[c.col] == "" {
			continue // a manifest from before groups
		}
		if row[c.col] != c.got {
			t.Errorf("%s = %s, manifest says %s", c.col, c.got, row[c.col])
		}
	}
}

// groupsCell is the manifest's `groups` (13): the active groups as
// index:name:start:cursor:received:lost:skipped:members, '-' for none.
func groupsCell(t *testing.T, s *Stream) string {
	t.Helper()
	gs, err := s.Groups()
	if err != nil {
		t.Fatal(err)
	}
	var cells []string
	for _, e := range gs {
		if !e.Active {
			continue
		}
		if e.CountGap() != 0 || e.Holding >= 0 { // 28.2, at rest
			t.Errorf("group %d %q: gap %d, hold in entry %d", e.Index, e.Name, e.CountGap(), e.Holding)
		}
		cells = append(cells, fmt.Sprintf("%d:%s:%d:%d:%d:%d:%d:%d", e.Index, e.Name, e.Start, e.Cursor,
			e.Received, e.Lost, e.Skipped, e.Members))
	}
	if len(cells) == 0 {
		return "-"
	}
	return strings.Join(cells, " ")
}

func checkStreamRow(t *testing.T, row manifestRow, open func() (*Stream, error)) {
	t.Helper()
	s, err := open()
	if row["stage"] == "open" {
		if err == nil {
			s.Close()
		}
		wantStreamErr(t, err, row)
		return
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	checkStreamGeometry(t, s, row)

	view, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	model, err := s.SimulateOldestReader()
	if row["stage"] == "attach" {
		wantStreamErr(t, err, row)
		return
	}
	if err != nil {
		t.Fatalf("attach (model): %v", err)
	}
	wantUint(t, "head after attach", row["head"], model.Head)
	wantUint(t, "cursor after attach", row["cursor"], model.Cursor0)
	want := parseMessages(t, row["messages"])
	if got := fmtMessages(model.Messages); got != fmtMessages(want) {
		t.Errorf("messages taken:\n got %s\nwant %s", got, fmtMessages(want))
	}
	switch row["stage"] {
	case "recv":
		if model.StoppedAt != "error" {
			t.Fatalf("the takes stopped at %q, want a refusal", model.StoppedAt)
		}
		wantStreamErr(t, model.RecvErr, row)
		return
	case "ok":
		if model.StoppedAt != "empty" {
			t.Errorf("the takes stopped at %q (%v), want an empty ring", model.StoppedAt, model.RecvErr)
		}
	default:
		t.Fatalf("unknown stage %q", row["stage"])
	}
	wantUint(t, "lost", row["lost"], model.Lost)
	if row["skipped"] != "" {
		wantUint(t, "skipped", row["skipped"], model.Skipped)
	}
	if row["groups"] != "" {
		if got := groupsCell(t, s); got != row["groups"] {
			t.Errorf("groups = %s, manifest says %s", got, row["groups"])
		}
	}
	wantUint(t, "abandoned", row["abandoned"], model.Counters.Abandoned)
	wantUint(t, "dropped", row["dropped"], model.Counters.Dropped)
	wantUint(t, "recoveries", row["recoveries"], uint64(model.Counters.Recoveries))
	if model.Received+model.Lost+model.Skipped != model.Cursor-model.Cursor0 { // 28.2
		t.Errorf("received %d + lost %d + skipped %d != cursor %d - cursor0 %d", model.Received, model.Lost,
			model.Skipped, model.Cursor, model.Cursor0)
	}
	// The look without attaching lists, among the committed slots, exactly the
	// messages the reader took (every message the ring still holds at or past
	// the cursor of an oldest attach).
	var listed []Message
	for _, v := range view.Messages() {
		if v.Seq >= model.Cursor0 {
			listed = append(listed, Message{Seq: v.Seq, Length: v.Length, TimestampNs: v.TimestampNs,
				WriterPID: v.WriterPID, Payload: v.Payload})
		}
	}
	if got := fmtMessages(listed); got != fmtMessages(want) {
		t.Errorf("committed slots listed:\n got %s\nwant %s", got, fmtMessages(want))
	}
}

// TestStreamVectors checks every row of streams.tsv: by name (a copy in
// /dev/shm) and by path, through the stream opener, the record opener, the
// dispatch, and the model of an attached reader. Nothing may change the file.
func TestStreamVectors(t *testing.T) {
	manifest := filepath.Join(streamVectorsDir, "streams.tsv")
	if _, err := os.Stat(manifest); err != nil {
		t.Skipf("no stream vectors: %v", err)
	}
	rows := readManifestFile(t, manifest)
	if len(rows) == 0 {
		t.Fatal("empty manifest")
	}
	listed := map[string]bool{}
	for _, row := range rows {
		file := row["file"]
		rel := filepath.Join("streams", file) // relative to vectorsDir
		listed[filepath.Base(file)] = true
		t.Run(row["open_as"]+"/"+strings.TrimSuffix(filepath.Base(file), ".seg"), func(t *testing.T) {
			if kind, err := PeekKindFile(filepath.Join(streamVectorsDir, file)); err != nil || string(kind) != row["peek"] {
				t.Errorf("peek: %q %v, manifest says %s", kind, err, row["peek"])
			}
			check := func(t *testing.T, openStream func() (*Stream, error), openRecord func() (*Segment, error),
				openAny func() (Handle, error)) {
				switch row["open_as"] {
				case "stream":
					checkStreamRow(t, row, openStream)
				case "record":
					seg, err := openRecord()
					if row["stage"] != "open" {
						t.Fatalf("record rows are refusals; stage %q", row["stage"])
					}
					if err == nil {
						seg.Close()
					}
					wantStreamErr(t, err, row)
				default:
					t.Fatalf("unknown open_as %q", row["open_as"])
				}
				// The dispatching opener picks the parser the peek names.
				h, err := openAny()
				if err == nil {
					_, isStream := h.(*Stream)
					if isStream != (row["peek"] == "stream") {
						t.Errorf("OpenAny gave %T for a %s", h, row["peek"])
					}
					h.Close()
				} else if row["stage"] != "open" && row["open_as"] == "stream" {
					t.Errorf("OpenAny: %v", err)
				}
			}
			t.Run("by-name", func(t *testing.T) {
				name, path := shmCopy(t, rel)
				before, _ := os.ReadFile(path)
				check(t, func() (*Stream, error) { return OpenStream(name, nil) },
					func() (*Segment, error) { return Open(name, nil) },
					func() (Handle, error) { return OpenAny("/"+name, nil) })
				if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
					t.Errorf("the reader changed the segment")
				}
			})
			t.Run("by-path", func(t *testing.T) {
				path := tempCopy(t, rel)
				before, _ := os.ReadFile(path)
				check(t, func() (*Stream, error) { return OpenStreamFile(path, nil) },
					func() (*Segment, error) { return OpenFile(path, &Options{NoAlias: true}) },
					func() (Handle, error) { return OpenAnyFile(path, nil) })
				if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
					t.Errorf("the reader changed the segment")
				}
			})
		})
	}
	files, _ := filepath.Glob(filepath.Join(streamVectorsDir, "*.seg"))
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s has no manifest row", filepath.Base(f))
		}
	}
}
