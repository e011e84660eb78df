// Package specreader is an independent, read-only implementation of the xshm
// segment layout (docs/LAYOUT.md), written from the specification alone.
// Records (version 1): it opens a segment read-only, validates its header,
// takes consistent snapshots with the seqlock protocol and waits for publishes
// on the futex. Streams (version 2, kind 2): it opens a stream read-only,
// validates its header, and looks at the ring and the tables without
// attaching (Stream); a model of an attached reader runs on a private copy
// (SimulateOldestReader).
//
// It never locks the writer mutex, never publishes and never recovers: a Go
// program without cgo cannot call glibc's pthread_mutex_* (LAYOUT.md section 2).
package specreader

import (
	"errors"
	"fmt"
	"syscall"
)

// Kind names the class of an error, after the reference's class names
// (LAYOUT.md section 1).
type Kind string

// The error kinds this reader reports.
const (
	// KindLayout: the segment is not a valid version-1 xshm segment, or a
	// read found a corrupt record / corrupt segment.
	KindLayout Kind = "LayoutError"
	// KindTorn: without BACKUP, the live slot was left odd by a dead or
	// stalled writer.
	KindTorn Kind = "TornRecordError"
	// KindArgument: an invalid argument (for example an invalid name).
	KindArgument Kind = "ArgumentError"
	// KindDtype: a dtype code that is not one of 5.1 (stream geometry at create).
	KindDtype Kind = "DtypeError"
	// KindError: the base kind, raised as itself (a full table, used-up
	// sequence numbers; section 22).
	KindError Kind = "Error"
	// KindTimeout: a wait, or the ready wait of an open, timed out.
	KindTimeout Kind = "WaitTimeoutError"
	// KindNotFound, KindPermission, KindOS: OS failures; Errno keeps the errno.
	KindNotFound   Kind = "FileNotFoundError"
	KindPermission Kind = "PermissionError"
	KindOS         Kind = "OSError"
)

// Error is every error this package returns.
type Error struct {
	Kind   Kind
	Detail string
	Errno  syscall.Errno // non-zero for OS failures
}

func (e *Error) Error() string { return string(e.Kind) + ": " + e.Detail }

// Is lets errors.Is(err, ErrLayout) and friends match on the kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Detail == "" && t.Errno == 0 && t.Kind == e.Kind
}

// Unwrap exposes the errno of an OS failure, so errors.Is(err, syscall.ENOENT) works.
func (e *Error) Unwrap() error {
	if e.Errno != 0 {
		return e.Errno
	}
	return nil
}

// Sentinels for errors.Is.
var (
	ErrLayout     = &Error{Kind: KindLayout}
	ErrTorn       = &Error{Kind: KindTorn}
	ErrArgument   = &Error{Kind: KindArgument}
	ErrTimeout    = &Error{Kind: KindTimeout}
	ErrNotFound   = &Error{Kind: KindNotFound}
	ErrPermission = &Error{Kind: KindPermission}
	ErrOS         = &Error{Kind: KindOS}
)

// KindOf returns the kind of err, or "" if it is not one of ours.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

func layoutErr(format string, a ...any) error {
	return &Error{Kind: KindLayout, Detail: fmt.Sprintf(format, a...)}
}

func tornErr(format string, a ...any) error {
	return &Error{Kind: KindTorn, Detail: fmt.Sprintf(format, a...)}
}

func argErr(format string, a ...any) error {
	return &Error{Kind: KindArgument, Detail: fmt.Sprintf(format, a...)}
}

func timeoutErr(format string, a ...any) error {
	return &Error{Kind: KindTimeout, Detail: fmt.Sprintf(format, a...)}
}

func osErr(op, path string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return &Error{Kind: KindOS, Detail: fmt.Sprintf("%s %s: %v", op, path, err)}
	}
	k := KindOS
	switch errno {
	case syscall.ENOENT:
		k = KindNotFound
	case syscall.EACCES, syscall.EPERM:
		k = KindPermission
	}
	return &Error{Kind: k, Detail: fmt.Sprintf("%s %s: %v", op, path, errno), Errno: errno}
}
