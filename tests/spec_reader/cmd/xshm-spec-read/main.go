// Command xshm-spec-read prints a consistent snapshot of an xshm segment as
// one JSON line, optionally after waiting for a publish:
//
//	xshm-spec-read [--wait SEQ] [--timeout S] [--follow N] [--file] NAME_OR_PATH
//
// A stream (layout version 2) is dumped instead, as one JSON line: its
// geometry, header counters, reader and writer tables, and every written slot
// of the ring in sequence order (a look without attaching: nothing is stored):
//
//	xshm-spec-read [--stream] [--oldest] [--file] NAME_OR_PATH
//
// Without --stream or --record the kind is dispatched from the file's first
// page (LAYOUT.md section 16); --stream and --record force one opener, which
// then refuses the other kind. --oldest adds "reader_at_oldest": what a reader
// attached at "oldest" would take, from a model run on a private copy.
//
// NAME_OR_PATH is a segment name (/dev/shm/<body>) unless --file is given or
// it contains a "/" after its first character (then it is a file path).
// Errors print {"error": "<Kind>", "detail": "..."} and exit with status 1
// (2 for a usage error).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"xshm.dev/specreader"
)

func main() { os.Exit(run(os.Args[1:])) }

func printError(kind, detail string) {
	b, _ := json.Marshal(struct {
		Error  string `json:"error"`
		Detail string `json:"detail"`
	}{kind, detail})
	fmt.Println(string(b))
}

func seconds(s float64) time.Duration {
	if s < 0 || math.IsNaN(s) {
		return -1
	}
	if s > float64(math.MaxInt64)/1e9 {
		return math.MaxInt64
	}
	return time.Duration(s * 1e9)
}

func run(args []string) int {
	fs := flag.NewFlagSet("xshm-spec-read", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	waitSeq := fs.String("wait", "", "wait until the header's seq exceeds `SEQ` before reading")
	timeout := fs.Float64("timeout", -1, "give up the wait after `S` seconds (negative: wait forever)")
	follow := fs.Int("follow", 0, "print `N` snapshots, each after the next publish (implies waiting)")
	openTimeout := fs.Float64("open-timeout", 0, "retry a missing name for `S` seconds")
	asFile := fs.Bool("file", false, "NAME_OR_PATH is a file path")
	noAlias := fs.Bool("no-alias", false, "never map the writable header alias (wait blind)")
	stall := fs.Float64("stall-timeout", 0, "without BACKUP, give up on a stalled writer after `S` seconds (0: default)")
	forceStream := fs.Bool("stream", false, "open NAME_OR_PATH as a stream (refuse a record)")
	forceRecord := fs.Bool("record", false, "open NAME_OR_PATH as a record (refuse a stream)")
	oldest := fs.Bool("oldest", false, "stream: add what a reader attached at oldest would take (a model on a private copy)")
	if err := fs.Parse(args); err != nil {
		printError(string(specreader.KindArgument), err.Error())
		return 2
	}
	if fs.NArg() != 1 {
		printError(string(specreader.KindArgument), "usage: xshm-spec-read [--wait SEQ] [--timeout S] [--follow N] [--file] NAME_OR_PATH")
		return 2
	}
	target := fs.Arg(0)
	opt := &specreader.Options{
		Timeout:      max(seconds(*openTimeout), 0),
		NoAlias:      *noAlias,
		StallTimeout: max(seconds(*stall), 0),
	}
	if *forceStream && *forceRecord {
		printError(string(specreader.KindArgument), "--stream and --record exclude each other")
		return 2
	}
	isPath := *asFile || strings.Contains(strings.TrimPrefix(target, "/"), "/")
	var h specreader.Handle
	var err error
	switch {
	case *forceStream && isPath:
		h, err = specreader.OpenStreamFile(target, opt)
	case *forceStream:
		h, err = specreader.OpenStream(target, opt)
	case *forceRecord && isPath:
		h, err = specreader.OpenFile(target, opt)
	case *forceRecord:
		h, err = specreader.Open(target, opt)
	case isPath:
		h, err = specreader.OpenAnyFile(target, opt)
	default:
		h, err = specreader.OpenAny(target, opt)
	}
	if err != nil {
		return fail(err)
	}
	defer h.Close()
	if st, ok := h.(*specreader.Stream); ok {
		if *waitSeq != "" || *follow > 0 {
			printError(string(specreader.KindArgument), "--wait and --follow apply to records, not streams")
			return 2
		}
		line, err := streamJSON(st, *oldest)
		if err != nil {
			return fail(err)
		}
		fmt.Println(string(line))
		return 0
	}
	seg := h.(*specreader.Segment)

	waiting := *waitSeq != "" || *follow > 0
	var last uint64
	if *waitSeq != "" {
		last, err = strconv.ParseUint(*waitSeq, 10, 64)
		if err != nil {
			printError(string(specreader.KindArgument), "--wait: "+err.Error())
			return 2
		}
	} else {
		last = seg.Seq()
	}
	n := max(*follow, 1)
	for range n {
		if waiting {
			if last, err = seg.Wait(last, seconds(*timeout)); err != nil {
				return fail(err)
			}
		}
		snap, err := seg.Read()
		if err != nil {
			return fail(err)
		}
		fmt.Println(string(snapshotJSON(seg, snap)))
		// A read may return publish n from the live slot before the header's seq says n
		// (LAYOUT.md 9.3): the next wait starts from what was read, or it would return at
		// once on the header reaching n and print publish n again.
		last = max(last, snap.Seq)
	}
	return 0
}

func fail(err error) int {
	kind := string(specreader.KindOf(err))
	detail := err.Error()
	if kind == "" {
		kind = "Error"
	} else {
		detail = strings.TrimPrefix(detail, kind+": ")
	}
	printError(kind, detail)
	return 1
}

func snapshotJSON(seg *specreader.Segment, s *specreader.Snapshot) []byte {
	g := seg.Geometry()
	b := []byte(`{"seq": `)
	b = strconv.AppendUint(b, s.Seq, 10)
	b = append(b, `, "header_seq": `...)
	b = strconv.AppendUint(b, seg.Seq(), 10)
	b = append(b, `, "counter": `...)
	b = strconv.AppendUint(b, s.Counter, 10)
	b = append(b, `, "timestamp_ns": `...)
	b = strconv.AppendInt(b, s.TimestampNs, 10)
	b = append(b, `, "writer_pid": `...)
	b = strconv.AppendUint(b, uint64(s.WriterPID), 10)
	b = append(b, `, "dtype": "`...)
	b = append(b, g.DType.String()...)
	b = append(b, `", "shape": [`...)
	for i, e := range g.Shape {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendUint(b, e, 10)
	}
	b = append(b, `], "backup": `...)
	b = strconv.AppendBool(b, g.Backup)
	b = append(b, `, "message_capacity": `...)
	b = strconv.AppendUint(b, uint64(g.MessageCapacity), 10)
	b = append(b, `, "slot": `...)
	b = strconv.AppendInt(b, int64(s.Slot), 10)
	b = append(b, `, "message": `...)
	m, _ := json.Marshal(string(s.Message)) // invalid UTF-8 becomes U+FFFD
	b = append(b, m...)
	b = append(b, `, "values": `...)
	b = specreader.AppendValuesJSON(b, g.DType, s.Values)
	return append(b, '}')
}
