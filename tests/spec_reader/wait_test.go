package specreader

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"
)

func f64s(vs ...float64) []byte {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(v))
	}
	return b
}

func TestWaitReturnsAtOnce(t *testing.T) {
	name, _ := shmCopy(t, "published-float64-4.seg")
	s, err := Open(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, timeout := range []time.Duration{0, time.Second, -1} {
		if seq, err := s.Wait(1, timeout); err != nil || seq != 2 {
			t.Errorf("Wait(1, %v) = %d, %v", timeout, seq, err)
		}
	}
	if s.Waiters() != 0 {
		t.Errorf("waiters %d", s.Waiters())
	}
}

func TestWaitTimesOut(t *testing.T) {
	for _, noAlias := range []bool{false, true} {
		name, _ := shmCopy(t, "published-float64-4.seg")
		s, err := Open(name, &Options{NoAlias: noAlias})
		if err != nil {
			t.Fatal(err)
		}
		for _, timeout := range []time.Duration{0, 150 * time.Millisecond} {
			start := time.Now()
			seq, err := s.Wait(2, timeout)
			el := time.Since(start)
			if !errors.Is(err, ErrTimeout) || seq != 2 {
				t.Errorf("noAlias=%v: Wait(2, %v) = %d, %v", noAlias, timeout, seq, err)
			}
			if el < timeout {
				t.Errorf("noAlias=%v: timeout %v took %v", noAlias, timeout, el)
			}
		}
		if s.Waiters() != 0 {
			t.Errorf("waiters %d after timeouts", s.Waiters())
		}
		s.Close()
	}
}

// A publish made while the waiter sleeps wakes it: counted (header alias,
// woken by FUTEX_WAKE) and blind (no alias, 1 ms slices).
func TestWaitWakesOnPublish(t *testing.T) {
	for _, noAlias := range []bool{false, true} {
		name, path := shmCopy(t, "published-float64-4.seg")
		s, err := Open(name, &Options{NoAlias: noAlias})
		if err != nil {
			t.Fatal(err)
		}
		w := newSimWriter(t, path)
		counted := make(chan uint32, 1)
		go func() {
			time.Sleep(200 * time.Millisecond)
			counted <- s.Waiters()
			w.publish(7, f64s(1, 2, 3, 4), "woken")
		}()
		start := time.Now()
		seq, err := s.Wait(2, 5*time.Second)
		el := time.Since(start)
		if err != nil || seq != 3 {
			t.Fatalf("noAlias=%v: Wait = %d, %v", noAlias, seq, err)
		}
		if el < 190*time.Millisecond {
			t.Errorf("noAlias=%v: woke after %v", noAlias, el)
		}
		want := uint32(1)
		if noAlias {
			want = 0
		}
		if c := <-counted; c != want {
			t.Errorf("noAlias=%v: waiters during the wait %d, want %d", noAlias, c, want)
		}
		if s.Waiters() != 0 {
			t.Errorf("waiters %d after the wait", s.Waiters())
		}
		snap, err := s.Read()
		if err != nil || snap.Seq != 3 || snap.Counter != 7 || string(snap.Message) != "woken" {
			t.Errorf("read after wake: %+v %v", snap, err)
		}
		s.Close()
	}
}

// Many publishes, many waiters: each waiter sees seq grow and never times out.
func TestWaitManyPublishes(t *testing.T) {
	name, path := shmCopy(t, "published-float64-4.seg")
	w := newSimWriter(t, path)
	const waiters, publishes = 4, 200
	errc := make(chan error, waiters)
	for i := range waiters {
		go func() {
			s, err := Open(name, &Options{NoAlias: i%2 == 1})
			if err != nil {
				errc <- err
				return
			}
			defer s.Close()
			last := uint64(2)
			for last < 2+publishes {
				seq, err := s.Wait(last, 5*time.Second)
				if err != nil {
					errc <- err
					return
				}
				if seq <= last {
					errc <- errors.New("seq did not grow")
					return
				}
				last = seq
			}
			errc <- nil
		}()
	}
	for range publishes {
		w.publish(1, f64s(0, 0, 0, 0), "x")
		time.Sleep(200 * time.Microsecond)
	}
	for range waiters {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	if n := *w.p32(offWaiters); n != 0 {
		t.Errorf("waiters %d at the end", n)
	}
}
