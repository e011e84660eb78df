package specreader

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// openAndRead opens data (written to a file) and reads it; any error is fine,
// a panic or a fault is not. Size 0 is skipped (it takes the 2 s ready wait).
func openAndRead(t testing.TB, dir string, data []byte) {
	if len(data) == 0 {
		return
	}
	path := filepath.Join(dir, "seg")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenFile(path, &Options{NoAlias: true, StallTimeout: 20 * time.Millisecond})
	if err != nil {
		if KindOf(err) == "" {
			t.Fatalf("untyped error %v", err)
		}
		return
	}
	defer s.Close()
	if _, err := s.Read(); err != nil && KindOf(err) == "" {
		t.Fatalf("untyped error %v", err)
	}
	s.Seq()
	if _, err := s.Wait(s.Seq(), 0); KindOf(err) != KindTimeout {
		t.Fatalf("wait: %v", err)
	}
}

func vectorSeeds(t testing.TB) [][]byte {
	files, _ := filepath.Glob(filepath.Join(vectorsDir, "*.seg"))
	var seeds [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// Random corruption of the vectors (header words, record words, lengths):
// typed errors or snapshots, never a panic, never a read past the mapping.
func TestCorruptionNeverPanics(t *testing.T) {
	seeds := vectorSeeds(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	interesting := []uint64{0, 1, 2, 3, 4, 8, 9, 15, 16, 63, 64, 65, 4095, 4096, 8192, 1 << 24, 1<<24 + 1,
		1<<32 - 1, 1 << 32, 1 << 40, 1<<40 + 1, 1<<63 - 1, 1 << 63, 1<<64 - 1}
	for i := range 3000 {
		data := append([]byte(nil), seeds[rng.IntN(len(seeds))]...)
		for range 1 + rng.IntN(4) {
			switch rng.IntN(4) {
			case 0: // a header u32 or u64 field
				off := rng.IntN(160/4) * 4
				v := interesting[rng.IntN(len(interesting))]
				for b := 0; b < 4+4*rng.IntN(2) && off+b < len(data); b++ {
					data[off+b] = byte(v >> (8 * b))
				}
			case 1: // a record word (lock, seq, message_len...)
				if len(data) > 4096 {
					off := 4096 + rng.IntN((len(data)-4096)/8)*8
					v := interesting[rng.IntN(len(interesting))]
					for b := 0; b < 8; b++ {
						data[off+b] = byte(v >> (8 * b))
					}
				}
			case 2: // a random byte anywhere
				data[rng.IntN(len(data))] ^= byte(1 + rng.IntN(255))
			case 3: // truncate or extend
				n := 1 + rng.IntN(len(data)+100)
				if n < len(data) {
					data = data[:n]
				} else {
					data = append(data, make([]byte, n-len(data))...)
				}
			}
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("iteration %d: panic %v", i, r)
				}
			}()
			openAndRead(t, dir, data)
		}()
	}
}

// FuzzOpenRead: `go test -fuzz FuzzOpenRead` explores further; plain
// `go test` runs the vectors as seeds.
func FuzzOpenRead(f *testing.F) {
	for _, s := range vectorSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		openAndRead(t, t.TempDir(), data)
	})
}
