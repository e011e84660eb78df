package specreader

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestMain fails the run if any test left a segment of this process in /dev/shm.
func TestMain(m *testing.M) {
	code := m.Run()
	entries, _ := os.ReadDir(ShmDir)
	prefix := "xshm-specgo-" + strconv.Itoa(os.Getpid()) + "-"
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			fmt.Fprintf(os.Stderr, "left behind in %s: %s\n", ShmDir, e.Name())
			os.Remove(ShmDir + "/" + e.Name())
			code = 1
		}
	}
	os.Exit(code)
}
