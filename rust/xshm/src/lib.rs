//! # xshm: shared-memory records any language can read
//!
//! A pure-Rust implementation of xshm's segment layout (`docs/LAYOUT.md`, layout version 1),
//! byte-compatible with the C++ header and the Python package: a segment created by any of
//! them is opened, read, written and waited on by the others, with no compile-time agreement.
//! No C or C++ is built; the operating system is reached through `libc` only.
//!
//! A **stream** (layout version 2, [`Stream`]) carries every message, in order: a ring of
//! slots with backpressure (block: the slowest reader gates writers; drop_oldest: writers
//! never wait and a lapped reader counts what it lost), any number of writers and readers in
//! any processes, work-queue groups ([`Stream::group_reader`]), zero-copy claims
//! ([`Stream::claim`]) and views ([`StreamReader::recv_view`]). Liveness is an OFD lock per
//! table entry, so a reader or writer killed at any instruction is found dead by the kernel's
//! word, never by a pid: its hole is abandoned, its mutex recovered, its entry reaped, and
//! every number is counted (`received + lost + skipped = cursor − start`). [`StreamLook`]
//! opens a stream to look, never to store.
//!
//! A segment under `/dev/shm` holds one **record**, the latest value of:
//! a counter (`u64`), a typed values array (one of 14 little-endian dtypes, up to 8
//! dimensions), and a message (UTF-8, up to its capacity), with its sequence number,
//! timestamp and writer pid.
//!
//! ## The algorithm
//!
//! - **Readers never wait and never write.** Each record slot starts with a seqlock word
//!   that a writer makes odd before it changes the slot and even after. A reader loads the
//!   word, copies the slot with atomic loads, and loads the word again: equal and even means
//!   the copy is one complete record. Every data word is moved with relaxed atomics (never a
//!   plain `&[u8]` over memory another process writes), and the fences that order them are
//!   documented at each site (`// SYNC POINT`).
//! - **A backup slot** holds the previous record while the live slot is being written, so a
//!   reader always finds one complete slot. A writer killed mid-write leaves at most one slot
//!   odd.
//! - **Writers are serialized by a robust process-shared mutex** (`pthread_mutex_t` with
//!   `PTHREAD_MUTEX_ROBUST`) in the header. When its owner dies, the next writer gets
//!   `EOWNERDEAD` and recovers the record before it publishes: it copies the complete slot
//!   over the torn one and makes the header's sequence agree. A read that meets a slot odd
//!   for long checks whether its writer is alive: a dead writer's torn record (only without
//!   a backup) is [`Error::TornRecord`], never a spin.
//! - **Waits sleep on a futex** (the header's epoch), bumped after each publish; a writer
//!   wakes only when a waiter announced itself.
//! - **Nothing read from a segment is trusted** beyond what was mapped: every header field is
//!   checked against the mapping at open ([`validate_header`]), and a bad one is
//!   [`Error::Layout`], never a panic or an out-of-bounds access.
//!
//! The protocol code (`src/protocol.rs`) is written against an abstract slot memory; under
//! `--cfg loom` the same code runs on loom's atomics, and the model checker explores it.
//!
//! ## Example
//!
//! ```
//! use xshm::{CreateOptions, Dtype, OpenOptions, SharedMemoryManager};
//!
//! # fn main() -> xshm::Result<()> {
//! let name = format!("xshm-doc-{}", std::process::id());
//! let writer = SharedMemoryManager::create(
//!     &name,
//!     &CreateOptions { shape: vec![3], dtype: Dtype::Float64, ..CreateOptions::default() },
//! )?;
//! writer.publish_values(&[1.0f64, 2.0, 3.0], Some("hello"), Some(7))?;
//!
//! // Another process would do exactly this:
//! let reader = SharedMemoryManager::open(&name, &OpenOptions::readonly())?;
//! let snap = reader.read()?;
//! assert_eq!(snap.values_f64()?, vec![1.0, 2.0, 3.0]);
//! assert_eq!(snap.text()?, "hello");
//! assert_eq!((snap.info.seq, snap.info.counter), (1, 7));
//!
//! writer.unlink()?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Safety
//!
//! The unsafe code is confined to the modules that touch the OS and the mapping (raw
//! pointers into the mapping, libc calls), each block with its `SAFETY` comment. The pure
//! modules (layout and validation, names, the protocol, errors, clocks) forbid `unsafe`, so
//! they run as they are under Miri and loom. The crate's tests also run under
//! AddressSanitizer (`make test-rust`).
//!
//! ## Platform
//!
//! Linux, little-endian, 64-bit. Writing needs glibc (the mutex in the header is glibc's); a
//! build on another C library opens segments read-only.
//!
//! A process that shrinks a segment file under a mapping makes the next access fault
//! (SIGBUS): segments are created at their full size and never resized by xshm.
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
// Under loom only the protocol and the model are compiled: the OS helpers go unused.
#![cfg_attr(loom, allow(dead_code))]

#[cfg(not(all(
    target_os = "linux",
    target_endian = "little",
    target_pointer_width = "64"
)))]
compile_error!("xshm's layout is little-endian; this crate supports 64-bit Linux");

mod clock;
mod error;
mod layout;
mod name;
pub mod protocol;
mod stream_layout;
mod sync;

#[cfg(not(loom))]
mod liveness;
#[cfg(not(loom))]
mod manager;
#[cfg(not(loom))]
mod mem;
#[cfg(not(loom))]
mod mutex;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod stream;
#[cfg(not(loom))]
mod stream_proto;
#[cfg(not(loom))]
mod stream_reader;
#[cfg(not(loom))]
mod stream_seg;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
mod wait;
#[cfg(not(loom))]
mod writer;

#[cfg(loom)]
pub mod model;

pub use clock::format_duration;
pub use error::{Error, ErrorKind, Result};
pub use layout::{
    compute_geometry, format_shape, mutex_abi_tag, off, validate_header, Dtype, Geometry,
    FLAG_BACKUP, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_DIMS, MAX_MESSAGE_CAPACITY,
    MAX_VALUES_BYTES, RESERVED, STATE_READY,
};
#[cfg(not(loom))]
pub use manager::{
    unlink, CreateOptions, Element, LockGuard, OpenOptions, Publish, RecordInfo,
    SharedMemoryManager, Snapshot,
};
pub use name::{normalize_name, MAX_NAME_BYTES};
#[cfg(not(loom))]
pub use stream::{segment_kind, Stream, StreamClaim, StreamLook, StreamOpenOptions, StreamOptions};
pub use stream_layout::{
    compute_stream_geometry, group_off, peek_kind, reader_off, slot_off, soff,
    validate_stream_header, word, writer_off, Backpressure, SegmentKind, StreamGeometry,
    STREAM_LAYOUT_VERSION,
};
#[cfg(not(loom))]
pub use stream_proto::GroupInfo;
#[cfg(not(loom))]
pub use stream_reader::{Interrupter, Message, MessageInfo, MessageView, Start, StreamReader};
