package specreader

import "strings"

// NormalizeName canonicalises a segment name (LAYOUT.md section 2): one
// leading "/" is dropped; the rest (the body) must be 1..255 bytes, contain no
// "/" and no NUL, and be neither "." nor "..". It returns the canonical name
// ("/" + body) and the body (the file is /dev/shm/<body>).
func NormalizeName(name string) (canonical, body string, err error) {
	body = strings.TrimPrefix(name, "/")
	switch {
	case body == "":
		return "", "", argErr("invalid segment name %q: empty", name)
	case len(body) > 255:
		return "", "", argErr("invalid segment name %q: longer than 255 bytes", name)
	case strings.ContainsRune(body, '/'):
		return "", "", argErr("invalid segment name %q: contains '/'", name)
	case strings.IndexByte(body, 0) >= 0:
		return "", "", argErr("invalid segment name %q: contains a NUL byte", name)
	case body == "." || body == "..":
		return "", "", argErr("invalid segment name %q", name)
	}
	return "/" + body, body, nil
}

// ShmDir is where Linux keeps POSIX shared-memory objects.
const ShmDir = "/dev/shm"

// ShmPath returns the file of a segment name: /dev/shm/<body>.
func ShmPath(name string) (string, error) {
	_, body, err := NormalizeName(name)
	if err != nil {
		return "", err
	}
	return ShmDir + "/" + body, nil
}
