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
	path := filepath.Join(t.TempDir(), file)
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
