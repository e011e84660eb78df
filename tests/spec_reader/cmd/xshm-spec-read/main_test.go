package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command in-process and returns its exit status and stdout.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	code := run(args)
	os.Stdout = old
	w.Close()
	out, _ := io.ReadAll(r)
	r.Close()
	return code, string(out)
}

func vectorCopy(t *testing.T, file string) string {
	data, err := os.ReadFile(filepath.Join("../../../vectors", file))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSnapshotLine(t *testing.T) {
	path := vectorCopy(t, "published-int16-2x3.seg")
	code, out := runCLI(t, path)
	want := `{"seq": 2, "header_seq": 2, "counter": 200, "timestamp_ns": 1767225600002000000, "writer_pid": 4194305, ` +
		`"dtype": "int16", "shape": [2, 3], "backup": true, "message_capacity": 20, "slot": 0, ` +
		`"message": "héllo ✓", "values": [-32768, -20, -9, 2, 13, 24]}` + "\n"
	if code != 0 || out != want {
		t.Errorf("exit %d\n got %s\nwant %s", code, out, want)
	}
	// --wait for an already published seq returns at once.
	if code, out = runCLI(t, "--wait", "1", "--timeout", "0", "--file", path); code != 0 || out != want {
		t.Errorf("--wait 1: exit %d %s", code, out)
	}
}

func TestErrorLines(t *testing.T) {
	cases := []struct {
		args []string
		code int
		kind string
	}{
		{[]string{vectorCopy(t, "corrupt-bad-magic.seg")}, 1, "LayoutError"},
		{[]string{vectorCopy(t, "torn-nobackup-float64-4.seg")}, 1, "TornRecordError"},
		{[]string{"--wait", "2", "--timeout", "0.05", vectorCopy(t, "published-float64-4.seg")}, 1, "WaitTimeoutError"},
		{[]string{"xshm-specgo-cli-no-such-segment"}, 1, "FileNotFoundError"},
		{[]string{".."}, 1, "ArgumentError"},
		{[]string{}, 2, "ArgumentError"},
		{[]string{"--wait", "x", vectorCopy(t, "published-float64-4.seg")}, 2, "ArgumentError"},
	}
	for _, c := range cases {
		code, out := runCLI(t, c.args...)
		var e struct{ Error, Detail string }
		if err := json.Unmarshal([]byte(out), &e); err != nil || code != c.code || e.Error != c.kind || e.Detail == "" ||
			strings.Count(out, "\n") != 1 {
			t.Errorf("%v: exit %d, %q", c.args, code, out)
		}
	}
}

func streamVector(t *testing.T, file string) string {
	return vectorCopy(t, filepath.Join("streams", file))
}

func TestStreamDump(t *testing.T) {
	path := streamVector(t, "stream-bytes-committed.seg")
	code, out := runCLI(t, path)
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var d struct {
		Kind, Backpressure, DType string
		Capacity, Head, Dropped   uint64
		MaxBytes                  uint64 `json:"max_bytes"`
		Writers                   []struct{ Index, Sent uint64 }
		Messages                  []struct {
			Seq, Length uint64
			Payload     string
			WriterPID   uint32 `json:"writer_pid"`
		}
		Slots []struct{ Status string }
		Model *struct{} `json:"reader_at_oldest"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	if d.Kind != "stream" || d.Backpressure != "block" || d.DType != "bytes" || d.Capacity != 8 || d.MaxBytes != 100 ||
		d.Head != 4 || len(d.Messages) != 4 || len(d.Slots) != 4 || d.Model != nil {
		t.Errorf("%+v", d)
	}
	if m := d.Messages[3]; m.Seq != 3 || m.Payload != "68c3a96c6c6f20e29c93" || m.WriterPID != 4194305 || m.Length != 10 {
		t.Errorf("message 3: %+v", m)
	}
	// --stream forces the stream opener; --oldest adds the model.
	code, out = runCLI(t, "--stream", "--oldest", streamVector(t, "stream-owner-died-claim.seg"))
	var m struct {
		Head  uint64
		Model struct {
			Recovered bool
			Head      uint64
			Lost      uint64
			Messages  []struct{ Seq uint64 }
		} `json:"reader_at_oldest"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil || code != 0 {
		t.Fatalf("exit %d %v: %s", code, err, out)
	}
	if m.Head != 2 || !m.Model.Recovered || m.Model.Head != 4 || m.Model.Lost != 2 || len(m.Model.Messages) != 2 {
		t.Errorf("%+v", m)
	}
	// A reader entry shows start, sleeping and its count gap (19.1, 28.2).
	_, out = runCLI(t, streamVector(t, "stream-dead-reader-full.seg"))
	var r struct {
		Readers []struct {
			Cursor, Start uint64
			Sleeping      uint32
			Attached      bool
			CountGap      *int64 `json:"count_gap"`
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Readers) != 1 || !r.Readers[0].Attached || r.Readers[0].Start != 0 || r.Readers[0].Sleeping != 0 ||
		r.Readers[0].CountGap == nil || *r.Readers[0].CountGap != 0 {
		t.Errorf("readers: %s", out)
	}
	// A frame stream's messages carry their values.
	_, out = runCLI(t, streamVector(t, "stream-frames-int16-scalar.seg"))
	if !strings.Contains(out, `"values":[-32]`) || !strings.Contains(out, `"shape":[]`) {
		t.Errorf("frames: %s", out)
	}
}

func TestStreamErrorLines(t *testing.T) {
	cases := []struct {
		args []string
		code int
		kind string
	}{
		{[]string{"--record", streamVector(t, "stream-bytes-committed.seg")}, 1, "LayoutError"},
		{[]string{"--stream", vectorCopy(t, "published-float64-4.seg")}, 1, "LayoutError"},
		{[]string{streamVector(t, "stream-corrupt-kind-3.seg")}, 1, "LayoutError"},
		{[]string{"--stream", streamVector(t, "stream-corrupt-truncated.seg")}, 1, "LayoutError"},
		{[]string{"--wait", "1", streamVector(t, "stream-bytes-committed.seg")}, 2, "ArgumentError"},
		{[]string{"--stream", "--record", "x"}, 2, "ArgumentError"},
		{[]string{"--stream", "xshm-specgo-cli-no-such-stream"}, 1, "FileNotFoundError"},
	}
	for _, c := range cases {
		code, out := runCLI(t, c.args...)
		var e struct{ Error, Detail string }
		if err := json.Unmarshal([]byte(out), &e); err != nil || code != c.code || e.Error != c.kind || e.Detail == "" {
			t.Errorf("%v: exit %d, %q", c.args, code, out)
		}
	}
	// The model's refusal is reported inside the dump, which itself succeeds.
	code, out := runCLI(t, "--oldest", streamVector(t, "stream-mutex-abi-other.seg"))
	if code != 0 || !strings.Contains(out, `"reader_at_oldest_error":{"detail":`) || !strings.Contains(out, "another C library") {
		t.Errorf("exit %d: %s", code, out)
	}
}
