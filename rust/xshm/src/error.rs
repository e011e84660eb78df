//! The errors of the crate: one enum whose variants are the kinds of docs/LAYOUT.md section 1.1,
//! the same tree the C++ header throws and Python's `xshm.errors` raises, name for name.
//! Errors the operating system reports keep their errno ([`Error::raw_os_error`]).
#![forbid(unsafe_code)] // pure: no OS calls, no unsafe (src/lib.rs, "Safety")

use std::fmt;
use std::io;

/// The result of every fallible call of the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong. The text of each variant is the message, written for the user; only the
/// variant (the kind) is part of the contract across languages.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A segment that is foreign, corrupt, truncated, of another layout version, or whose
    /// layout does not match what the caller asked for (C++ `LayoutError`).
    Layout(String),
    /// A bad argument: a name, shape, size or timeout (C++ `ArgumentError`).
    Argument(String),
    /// A dtype the layout cannot carry, or a typed call of another element type (C++
    /// `DtypeError`, an argument error).
    Dtype(String),
    /// A message longer than the message slot, with truncation not asked for (C++
    /// `MessageTooLongError`, an argument error).
    MessageTooLong(String),
    /// A write through a handle opened read-only (C++ `ReadOnlyError`).
    ReadOnly(String),
    /// A message slot holding bytes that are not UTF-8, met by [`crate::Snapshot::text`]
    /// (C++ `MessageDecodeError`).
    MessageDecode {
        /// What happened.
        message: String,
        /// Where the first invalid sequence starts.
        offset: usize,
    },
    /// Only without a backup slot: the record was left half-written by a writer that died or
    /// stalls mid-write (C++ `TornRecordError`).
    TornRecord(String),
    /// A bounded wait ran out: a wait for a publish, for a segment to appear, for the writer
    /// lock (C++ `WaitTimeoutError`).
    WaitTimeout(String),
    /// The handle was closed (C++ `ClosedError`); a stream reader interrupted from another
    /// thread.
    Closed(String),
    /// A stream send that ran out of time: no room in a block ring, the mutex held, or the
    /// slot it needs still being written by an earlier writer (C++ `StreamFullError`, a
    /// `WaitTimeoutError`: [`Error::is_timeout`] is true for both).
    StreamFull(String),
    /// A zero-copy view of a drop_oldest stream's message whose slot a writer re-marked while
    /// the view was held: what was read through it may be torn (C++ `OverwrittenError`).
    Overwritten(String),
    /// The base kind raised as itself (C++ `xshm::Error`, Python `XshmError`): a stream whose
    /// reader or writer table is full of live entries, whose 2^62 sequence numbers are used
    /// up, or whose handle is used in a process forked after it was opened.
    Other(String),
    /// The operating system refused a call; `source` keeps the errno.
    Os {
        /// The call and what it was given, the OS's text, and where known what the user can
        /// do: "shm_open(/x): No such file or directory: no segment of that name ...".
        message: String,
        /// The OS error.
        source: io::Error,
    },
}

/// The kind of an [`Error`], without its text: what a cross-language test compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::Layout`].
    Layout,
    /// [`Error::Argument`].
    Argument,
    /// [`Error::Dtype`].
    Dtype,
    /// [`Error::MessageTooLong`].
    MessageTooLong,
    /// [`Error::ReadOnly`].
    ReadOnly,
    /// [`Error::MessageDecode`].
    MessageDecode,
    /// [`Error::TornRecord`].
    TornRecord,
    /// [`Error::WaitTimeout`].
    WaitTimeout,
    /// [`Error::Closed`].
    Closed,
    /// [`Error::StreamFull`].
    StreamFull,
    /// [`Error::Overwritten`].
    Overwritten,
    /// [`Error::Other`].
    Other,
    /// [`Error::Os`].
    Os,
}

impl ErrorKind {
    /// The name the error has in C++ and Python ("LayoutError", ...); an OS error is "OSError".
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Layout => "LayoutError",
            ErrorKind::Argument => "ArgumentError",
            ErrorKind::Dtype => "DtypeError",
            ErrorKind::MessageTooLong => "MessageTooLongError",
            ErrorKind::ReadOnly => "ReadOnlyError",
            ErrorKind::MessageDecode => "MessageDecodeError",
            ErrorKind::TornRecord => "TornRecordError",
            ErrorKind::WaitTimeout => "WaitTimeoutError",
            ErrorKind::Closed => "ClosedError",
            ErrorKind::StreamFull => "StreamFullError",
            ErrorKind::Overwritten => "OverwrittenError",
            ErrorKind::Other => "Error",
            ErrorKind::Os => "OSError",
        }
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Layout(_) => ErrorKind::Layout,
            Error::Argument(_) => ErrorKind::Argument,
            Error::Dtype(_) => ErrorKind::Dtype,
            Error::MessageTooLong(_) => ErrorKind::MessageTooLong,
            Error::ReadOnly(_) => ErrorKind::ReadOnly,
            Error::MessageDecode { .. } => ErrorKind::MessageDecode,
            Error::TornRecord(_) => ErrorKind::TornRecord,
            Error::WaitTimeout(_) => ErrorKind::WaitTimeout,
            Error::Closed(_) => ErrorKind::Closed,
            Error::StreamFull(_) => ErrorKind::StreamFull,
            Error::Overwritten(_) => ErrorKind::Overwritten,
            Error::Other(_) => ErrorKind::Other,
            Error::Os { .. } => ErrorKind::Os,
        }
    }

    /// True for the argument errors: [`Error::Argument`], [`Error::Dtype`] and
    /// [`Error::MessageTooLong`] (C++: derived from `ArgumentError`).
    pub fn is_argument(&self) -> bool {
        matches!(
            self,
            Error::Argument(_) | Error::Dtype(_) | Error::MessageTooLong(_)
        )
    }

    /// True for the timeouts: [`Error::WaitTimeout`] and [`Error::StreamFull`] (C++:
    /// `StreamFullError` derives from `WaitTimeoutError`).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::WaitTimeout(_) | Error::StreamFull(_))
    }

    /// The errno of an [`Error::Os`] (ENOENT for a name that does not exist, EEXIST for a
    /// name taken, EACCES, ENOSPC, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// An OS error of `call` ("shm_open(/x)") with this errno.
    pub(crate) fn os(errno: i32, call: impl AsRef<str>) -> Self {
        Error::Os {
            message: format!("{}: {}", call.as_ref(), strerror(errno)),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The errno of the last failed libc call, as an [`Error::Os`].
    pub(crate) fn last_os(call: impl AsRef<str>) -> Self {
        Error::os(io::Error::last_os_error().raw_os_error().unwrap_or(0), call)
    }

    /// An OS error whose text goes on with what the user can do about it.
    pub(crate) fn os_hint(errno: i32, call: &str, hint: &str) -> Self {
        Error::Os {
            message: format!("{call}: {}: {hint}", strerror(errno)),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// This error with `prefix` before its text ("segment /x: " before a layout error).
    pub(crate) fn prefixed(self, prefix: &str) -> Self {
        match self {
            Error::Layout(m) => Error::Layout(format!("{prefix}{m}")),
            other => other,
        }
    }
}

/// The OS's text for an errno, without the " (os error N)" that `io::Error` adds.
fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Layout(m)
            | Error::Argument(m)
            | Error::Dtype(m)
            | Error::MessageTooLong(m)
            | Error::ReadOnly(m)
            | Error::TornRecord(m)
            | Error::WaitTimeout(m)
            | Error::Closed(m)
            | Error::StreamFull(m)
            | Error::Overwritten(m)
            | Error::Other(m) => f.write_str(m),
            Error::MessageDecode { message, .. } | Error::Os { message, .. } => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    /// An OS error keeps its errno; every other kind becomes `InvalidData` (layout, torn) or
    /// `InvalidInput` (arguments), `TimedOut`, `PermissionDenied` (read-only) or `Other`.
    fn from(e: Error) -> io::Error {
        let kind = match e.kind() {
            ErrorKind::Os => {
                if let Some(n) = e.raw_os_error() {
                    return io::Error::new(io::Error::from_raw_os_error(n).kind(), e);
                }
                io::ErrorKind::Other
            }
            ErrorKind::Layout | ErrorKind::TornRecord | ErrorKind::MessageDecode => {
                io::ErrorKind::InvalidData
            }
            ErrorKind::Argument | ErrorKind::Dtype | ErrorKind::MessageTooLong => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::WaitTimeout | ErrorKind::StreamFull => io::ErrorKind::TimedOut,
            ErrorKind::ReadOnly => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_keep_their_errno_and_say_the_call() {
        let e = Error::os(libc::ENOENT, "open(/dev/shm/x)");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(e.kind(), ErrorKind::Os);
        assert_eq!(e.to_string(), "open(/dev/shm/x): No such file or directory");
        // A name holding ": " keeps the OS's text.
        let e = Error::os(libc::ENOENT, "shm_unlink(/a: b)");
        assert_eq!(
            e.to_string(),
            "shm_unlink(/a: b): No such file or directory"
        );
        assert!(std::error::Error::source(&e).is_some());
        let hinted = Error::os_hint(libc::EEXIST, "open(/dev/shm/x)", "remove it first");
        assert_eq!(
            hinted.to_string(),
            "open(/dev/shm/x): File exists: remove it first"
        );
        let io: io::Error = hinted.into();
        assert_eq!(io.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn kinds_have_the_cross_language_names() {
        assert_eq!(Error::Layout("x".into()).kind().name(), "LayoutError");
        assert!(Error::Dtype("x".into()).is_argument());
        assert!(!Error::ReadOnly("x".into()).is_argument());
        assert_eq!(
            Error::Layout("bad".into())
                .prefixed("segment /a: ")
                .to_string(),
            "segment /a: bad"
        );
    }
}
