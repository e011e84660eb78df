package specreader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOpenNotFound(t *testing.T) {
	name := uniqueName("missing")
	_, err := Open(name, nil)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("got %v, want FileNotFoundError (ENOENT)", err)
	}
	start := time.Now()
	_, err = Open(name, &Options{Timeout: 150 * time.Millisecond})
	if el := time.Since(start); !errors.Is(err, ErrNotFound) || el < 150*time.Millisecond {
		t.Fatalf("with timeout: %v after %v", err, el)
	}
}

func TestOpenPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root bypasses file permissions")
	}
	_, path := shmCopy(t, "published-float64-4.seg")
	os.Chmod(path, 0)
	if _, err := OpenFile(path, nil); !errors.Is(err, ErrPermission) || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("got %v, want PermissionError", err)
	}
}

// A name that appears while the opener retries ENOENT is opened.
func TestOpenRetriesUntilCreated(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(vectorsDir, "published-float64-4.seg"))
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueName("late")
	tmp := ShmDir + "/" + name + ".tmp"
	t.Cleanup(func() { os.Remove(tmp); os.Remove(ShmDir + "/" + name) })
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(tmp, data, 0o600)
		os.Rename(tmp, ShmDir+"/"+name)
	}()
	s, err := Open(name, &Options{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Seq() != 2 {
		t.Errorf("seq %d", s.Seq())
	}
}

// An empty file (a creator that died before ftruncate) is "never made ready"
// after the 2 s ready wait.
func TestOpenEmptyFileNeverReady(t *testing.T) {
	t.Parallel()
	name := uniqueName("empty")
	path := ShmDir + "/" + name
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	start := time.Now()
	_, err := Open(name, nil)
	el := time.Since(start)
	if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "never made ready") {
		t.Fatalf("got %v", err)
	}
	if el < 2*time.Second {
		t.Errorf("took %v, want at least the 2 s ready wait", el)
	}
}

// A file whose creator holds LOCK_EX is "still being created": a timeout
// error after 2 s + timeout.
func TestOpenLockedStillBeingCreated(t *testing.T) {
	t.Parallel()
	name, path := shmCopy(t, "published-float64-4.seg")
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(name, &Options{Timeout: 200 * time.Millisecond})
	el := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "still being created") {
		t.Fatalf("got %v", err)
	}
	if el < 2200*time.Millisecond {
		t.Errorf("took %v, want at least 2 s + the 200 ms timeout", el)
	}
}

// A creator that takes LOCK_EX on an empty file, fills it and unlocks: the
// opener that saw size 0 goes back to the lock and then opens it.
func TestOpenSizeZeroThenCreated(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(vectorsDir, "published-float64-4.seg"))
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueName("building")
	path := ShmDir + "/" + name
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	done := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer syscall.Close(fd)
		if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
			done <- err
			return
		}
		// Header with state 0 first, then READY last (what a creator does).
		building := append([]byte(nil), data...)
		copy(building[offState:], []byte{0, 0, 0, 0})
		if _, err := syscall.Pwrite(fd, building, 0); err != nil {
			done <- err
			return
		}
		time.Sleep(50 * time.Millisecond)
		_, err = syscall.Pwrite(fd, data[offState:offState+4], offState)
		syscall.Flock(fd, syscall.LOCK_UN)
		done <- err
	}()
	s, err := Open(name, nil)
	if e := <-done; e != nil {
		t.Fatal(e)
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if snap, err := s.Read(); err != nil || snap.Seq != 2 {
		t.Errorf("read %+v %v", snap, err)
	}
}

// The header alias exists only when the user may write the object.
func TestHeaderAlias(t *testing.T) {
	name, path := shmCopy(t, "published-float64-4.seg")
	s, err := Open(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.CanCountWaiters() {
		t.Error("writable object, but no header alias")
	}
	s.Close()
	s, err = Open(name, &Options{NoAlias: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.CanCountWaiters() {
		t.Error("NoAlias, but a header alias")
	}
	s.Close()
	if os.Geteuid() != 0 {
		os.Chmod(path, 0o400)
		s, err = Open(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.CanCountWaiters() {
			t.Error("read-only object, but a header alias")
		}
		s.Close()
	}
	// A closed handle refuses, never faults.
	if _, err := s.Read(); !errors.Is(err, ErrArgument) {
		t.Errorf("read after close: %v", err)
	}
	if _, err := s.Wait(0, 0); !errors.Is(err, ErrArgument) {
		t.Errorf("wait after close: %v", err)
	}
}

// A file longer than total_size is accepted, the excess ignored.
func TestOpenLongerFile(t *testing.T) {
	_, path := shmCopy(t, "published-float64-4.seg")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 5000))
	f.Close()
	s, err := OpenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if snap, err := s.Read(); err != nil || string(snap.Message) != "float64" {
		t.Errorf("%+v %v", snap, err)
	}
}
