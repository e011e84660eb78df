package specreader

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

const vectorsDir = "../vectors"

var uniq atomic.Int64

// uniqueName returns a segment name no other test (or process) uses.
func uniqueName(tag string) string {
	return fmt.Sprintf("xshm-specgo-%d-%d-%d-%s", os.Getpid(), time.Now().UnixNano()%1e9, uniq.Add(1), tag)
}

// shmCopy copies a vector into /dev/shm under a unique name, removed when the
// test ends. It returns the name and the file path.
func shmCopy(t testing.TB, file string) (name, path string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, file))
	if err != nil {
		t.Fatal(err)
	}
	name = uniqueName(strings.TrimSuffix(filepath.Base(file), ".seg"))
	path = ShmDir + "/" + name
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	return name, path
}

// tempCopy copies a vector into the test's temporary directory.
func tempCopy(t testing.TB, file string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, file))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// manifestRow is one line of segments.tsv, by column name.
type manifestRow map[string]string

func readManifest(t testing.TB) []manifestRow {
	t.Helper()
	return readManifestFile(t, filepath.Join(vectorsDir, "segments.tsv"))
}

// readManifestFile reads a manifest in the format of section 13.
func readManifestFile(t testing.TB, path string) []manifestRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cols []string
	var rows []manifestRow
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if cols == nil {
			cols = fields
			continue
		}
		if len(fields) > len(cols) {
			t.Fatalf("manifest line has %d fields, header %d: %q", len(fields), len(cols), line)
		}
		r := manifestRow{}
		for i, c := range cols {
			if i < len(fields) {
				r[c] = fields[i]
			} else {
				r[c] = ""
			}
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// simWriter is a test-only writer that follows LAYOUT.md section 9.3 without
// the mutex (one writer, inside the test), to drive the reader and waiter.
type simWriter struct {
	mem  []byte
	base unsafe.Pointer
	g    Geometry
}

func newSimWriter(t testing.TB, path string) *simWriter {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	mem, err := syscall.Mmap(fd, 0, int(st.Size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	w := &simWriter{mem: mem, base: unsafe.Pointer(&mem[0])}
	if w.g, err = validateHeader(mem, uint64(st.Size)); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *simWriter) p64(off uint64) *uint64 { return (*uint64)(at(w.base, off)) }
func (w *simWriter) p32(off uint64) *uint32 { return (*uint32)(at(w.base, off)) }

func (w *simWriter) beginWrite(slot int) uint64 {
	p := w.p64(w.g.RecordOffset[slot] + recLock)
	l := atomic.LoadUint64(p)
	if l&1 == 0 {
		l++
		atomic.StoreUint64(p, l)
	}
	return l
}

func (w *simWriter) endWrite(slot int, odd uint64) {
	atomic.StoreUint64(w.p64(w.g.RecordOffset[slot]+recLock), odd+1)
}

// storeBytes stores b at off with 8-byte atomic stores, zero-padding the
// last word (the areas are padded to 64 bytes, so this stays inside them).
func (w *simWriter) storeBytes(off uint64, b []byte) {
	var word [8]byte
	for i := 0; i < len(b); i += 8 {
		word = [8]byte{}
		copy(word[:], b[i:])
		atomic.StoreUint64(w.p64(off+uint64(i)), *(*uint64)(unsafe.Pointer(&word)))
	}
}

func (w *simWriter) storeSlot(slot int, n, counter uint64, values []byte, msg string) {
	rec := w.g.RecordOffset[slot]
	odd := w.beginWrite(slot)
	atomic.StoreUint64(w.p64(rec+recSeq), n)
	atomic.StoreUint64(w.p64(rec+recCounter), counter)
	atomic.StoreUint64(w.p64(rec+recTimestamp), uint64(time.Now().UnixNano()))
	atomic.StoreUint64(w.p64(rec+recWriterPID), uint64(os.Getpid())|uint64(len(msg))<<32)
	w.storeBytes(rec+uint64(w.g.ValuesOffset), values)
	w.storeBytes(rec+uint64(w.g.MessageOffset), []byte(msg))
	w.endWrite(slot, odd)
}

// publish is section 9.3: live slot, header seq, notify, backup slot.
func (w *simWriter) publish(counter uint64, values []byte, msg string) uint64 {
	var n uint64
	if w.g.Backup {
		n = atomic.LoadUint64(w.p64(w.g.RecordOffset[0]+recSeq)) + 1
	} else {
		n = atomic.LoadUint64(w.p64(offSeq)) + 1
	}
	w.storeSlot(0, n, counter, values, msg)
	atomic.StoreUint64(w.p64(offSeq), n)
	w.notify()
	if w.g.Backup {
		w.storeSlot(1, n, counter, values, msg)
	}
	return n
}

func (w *simWriter) notify() {
	atomic.AddUint32(w.p32(offEpoch), 1)
	if atomic.LoadUint32(w.p32(offWaiters)) != 0 {
		const futexWake = 1
		syscall.Syscall6(syscall.SYS_FUTEX, uintptr(at(w.base, offEpoch)), futexWake, 0x7fffffff, 0, 0, 0)
	}
}
