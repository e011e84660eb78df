//! The bytes of a stream, layout version 2 (docs/LAYOUT.md Part II, sections 16 to 22): the
//! header offsets, the geometry ([`compute_stream_geometry`]), the checks a stream opener
//! makes ([`validate_stream_header`]) and the dispatch between the kinds of segment
//! ([`peek_kind`]). Pure: no OS calls, no shared memory.
#![forbid(unsafe_code)] // pure: no OS calls, no unsafe (src/lib.rs, "Safety")

use crate::error::{Error, Result};
use crate::layout::{self, Dtype, HEADER_SIZE, MAGIC, MAX_DIMS, STATE_READY};

/// The layout version of the stream family.
pub const STREAM_LAYOUT_VERSION: u32 = 2;
/// The `kind` (header offset 28 in version 2) of a stream.
pub const KIND_STREAM: u32 = 2;
/// Flag bit: backpressure drop_oldest (0: block).
pub const FLAG_DROP_OLDEST: u32 = 1;
/// The most messages a ring holds, and the most bytes one message holds (2^30 each).
pub const MAX_STREAM_CAPACITY: u64 = 1 << 30;
/// The most bytes of one message.
pub const MAX_MESSAGE_BYTES: u64 = 1 << 30;
/// The largest ring, in bytes (2^40, inclusive).
pub const MAX_RING_BYTES: u64 = 1 << 40;
/// The most reader, writer and group entries.
pub const MAX_TABLE_ENTRIES: u32 = 1024;
/// Bytes of a slot's header, before its payload.
pub const SLOT_HEADER_SIZE: u64 = 64;
/// Bytes of a reader entry.
pub const READER_ENTRY_SIZE: u64 = 128;
/// Bytes of a writer entry.
pub const WRITER_ENTRY_SIZE: u64 = 64;
/// Bytes of a group entry.
pub const GROUP_ENTRY_SIZE: u64 = 192;

/// Byte offsets of the stream header's fields (docs/LAYOUT.md section 18).
pub mod soff {
    /// `u32` kind (2).
    pub const KIND: usize = 28;
    /// `u32` flags: bit 0 drop_oldest.
    pub const FLAGS: usize = 32;
    /// `u32` capacity.
    pub const CAPACITY: usize = 36;
    /// `u64` max_bytes.
    pub const MAX_BYTES: usize = 40;
    /// `u64` slot_size.
    pub const SLOT_SIZE: usize = 48;
    /// `u64` slots_offset.
    pub const SLOTS_OFFSET: usize = 56;
    /// `u32` max_readers.
    pub const MAX_READERS: usize = 64;
    /// `u32` max_writers.
    pub const MAX_WRITERS: usize = 68;
    /// `u64` readers_offset.
    pub const READERS_OFFSET: usize = 72;
    /// `u64` writers_offset.
    pub const WRITERS_OFFSET: usize = 80;
    /// `u32` dtype (0: byte messages).
    pub const DTYPE: usize = 88;
    /// `u32` ndim.
    pub const NDIM: usize = 92;
    /// `[u64; 8]` shape.
    pub const SHAPE: usize = 96;
    /// `u32` mutex_size.
    pub const MUTEX_SIZE: usize = 160;
    /// `u32` mutex_abi.
    pub const MUTEX_ABI: usize = 164;
    /// `u32` max_groups.
    pub const MAX_GROUPS: usize = 196;
    /// `u64` groups_offset (0: no table).
    pub const GROUPS_OFFSET: usize = 200;
    /// `u64` head, atomic: the sequence number the next claim gets.
    pub const HEAD: usize = 256;
    /// `u32` data_epoch, atomic: readers' futex word.
    pub const DATA_EPOCH: usize = 264;
    /// `u32` data_waiters, atomic: readers that may sleep on `data_epoch`.
    pub const DATA_WAITERS: usize = 268;
    /// `u64` claim_seq: 0, or the claim in progress whose `dropped` recovery settles.
    pub const CLAIM_SEQ: usize = 272;
    /// `u64` claim_dropped: the value of `dropped` once that overwrite is marked.
    pub const CLAIM_DROPPED: usize = 280;
    /// `u32` space_epoch, atomic: writers' futex word.
    pub const SPACE_EPOCH: usize = 320;
    /// `u32` space_waiters, atomic: writer handles that may sleep on `space_epoch`.
    pub const SPACE_WAITERS: usize = 324;
    /// `u64` dropped, atomic: slots overwritten while no reader was attached.
    pub const DROPPED: usize = 384;
    /// `u64` abandoned, atomic: sequence numbers lost with their writer.
    pub const ABANDONED: usize = 392;
    /// `u32` readers_gen, atomic: a cache key for writers' view of the reader table.
    pub const READERS_GEN: usize = 400;
    /// `u32` reaped, atomic: dead readers detached and dead writers' entries taken over.
    pub const REAPED: usize = 404;
    /// `u32` owner_pid, atomic (informational).
    pub const OWNER_PID: usize = 448;
    /// `u32` recoveries, atomic.
    pub const RECOVERIES: usize = 452;
    /// The stream mutex.
    pub const MUTEX: usize = 512;
}

/// Byte offsets in a reader entry (docs/LAYOUT.md 19.1, 128 bytes; the lock byte is byte 0).
pub mod reader_off {
    /// `u64` the next sequence number this reader takes.
    pub const CURSOR: usize = 0;
    /// `u64` messages it missed (lapped or abandoned).
    pub const LOST: usize = 8;
    /// `u64` messages it took.
    pub const RECEIVED: usize = 16;
    /// `u64` the cursor it attached at.
    pub const START: usize = 24;
    /// `u32` 0, or this attachment's generation while counted in `data_waiters`.
    pub const SLEEPING: usize = 32;
    /// `u64` dropped claims it stepped over.
    pub const SKIPPED: usize = 40;
    /// `u64` a group member's step in progress (0: none).
    pub const HOLD: usize = 48;
    /// `u64` 0 free, `(generation << 8) | 1` attached.
    pub const STATE: usize = 64;
    /// `u32` the attacher's pid (informational).
    pub const PID: usize = 72;
    /// `u32` attachments this entry has had.
    pub const GENERATION: usize = 76;
    /// `i64` CLOCK_REALTIME at the attach (informational).
    pub const ATTACHED_NS: usize = 80;
    /// `u32` 0 solo, `g + 1` a member of group entry `g`.
    pub const GROUP: usize = 88;
}

/// Byte offsets in a writer entry (docs/LAYOUT.md 19.2, 64 bytes; the lock byte is byte 0).
pub mod writer_off {
    /// `u64` 0 free, `(generation << 8) | 1` registered.
    pub const STATE: usize = 0;
    /// `u32` the registrant's pid (informational).
    pub const PID: usize = 8;
    /// `u32` registrations this entry has had.
    pub const GENERATION: usize = 12;
    /// `u64` sequence numbers this entry claimed since it was registered.
    pub const SENT: usize = 16;
    /// `i64` CLOCK_REALTIME at the registration (informational).
    pub const ATTACHED_NS: usize = 24;
    /// `u32` 0, or this registration's generation while counted in `space_waiters`.
    pub const SLEEPING: usize = 32;
}

/// Byte offsets in a group entry (docs/LAYOUT.md 19.3, 192 bytes).
pub mod group_off {
    /// `u64` the next sequence number a member takes.
    pub const CURSOR: usize = 0;
    /// `u64` messages its members took.
    pub const RECEIVED: usize = 8;
    /// `u64` sequence numbers lost (lapped, abandoned, or with a member that died taking them).
    pub const LOST: usize = 16;
    /// `u64` dropped claims stepped over.
    pub const SKIPPED: usize = 24;
    /// `u64` the cursor it was created at.
    pub const START: usize = 32;
    /// The group mutex.
    pub const MUTEX: usize = 64;
    /// `u64` 1: active.
    pub const STATE: usize = 128;
    /// `u32` creations of this entry.
    pub const GENERATION: usize = 136;
    /// `u32` bytes of the name (1 to 40).
    pub const NAME_LEN: usize = 140;
    /// `i64` CLOCK_REALTIME at the creation (informational).
    pub const CREATED_NS: usize = 144;
    /// `[u8; 40]` the name, zero-padded.
    pub const NAME: usize = 152;
}

/// Byte offsets in a slot header (docs/LAYOUT.md 20.1); the payload starts at 64.
pub mod slot_off {
    /// `u64` the slot word (20.2).
    pub const WORD: usize = 0;
    /// `u64` payload bytes of the message.
    pub const LENGTH: usize = 8;
    /// `i64` CLOCK_REALTIME when the writer filled the slot.
    pub const TIMESTAMP_NS: usize = 16;
    /// `u32` the writer's pid.
    pub const WRITER_PID: usize = 24;
    /// `u32` the writer-table entry that claimed the slot.
    pub const WRITER_INDEX: usize = 28;
    /// `u64` that entry's state when it claimed.
    pub const WRITER_STATE: usize = 32;
    /// `u64` `x + 1` when the `A(x)` in the word is a dropped claim.
    pub const CANCELLED: usize = 40;
    /// The payload.
    pub const PAYLOAD: usize = 64;
}

/// The slot word (docs/LAYOUT.md 20.2): 0 never written, else `(x << 2) | tag`.
pub mod word {
    /// A writer claimed the slot for `x` and is filling it.
    pub const WRITING: u64 = 1;
    /// Message `x` is complete.
    pub const COMMITTED: u64 = 2;
    /// `x` was lost with its writer, or its claim was dropped.
    pub const ABANDONED: u64 = 3;
    /// The last sequence number a stream gives out (2^62 − 1).
    pub const MAX_SEQ: u64 = (1 << 62) - 1;

    /// The word of sequence number `x` with `tag`.
    pub const fn make(x: u64, tag: u64) -> u64 {
        (x << 2) | tag
    }
    /// The sequence number of a word.
    pub const fn seq(w: u64) -> u64 {
        w >> 2
    }
    /// The tag of a word.
    pub const fn tag(w: u64) -> u64 {
        w & 3
    }
}

/// The `state` of a table entry attached with `generation`.
pub(crate) const fn entry_state(generation: u32) -> u64 {
    ((generation as u64) << 8) | 1
}

/// The generation in an entry's `state` (`sleeping`'s mark).
pub(crate) const fn entry_generation(state: u64) -> u32 {
    (state >> 8) as u32
}

/// The generation after `g`, skipping 0 (`sleeping`'s "not counted").
pub(crate) const fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// Page 0 of a new stream with its identity filled in and `state` still 0 (18.1).
pub(crate) fn stream_header_image(
    g: &StreamGeometry,
    id: &layout::Identity,
) -> Box<[u8; HEADER_SIZE]> {
    let mut p = Box::new([0u8; HEADER_SIZE]);
    let mut put = |at: usize, bytes: &[u8]| p[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &MAGIC);
    put(8, &STREAM_LAYOUT_VERSION.to_le_bytes());
    put(16, &g.total_size.to_le_bytes());
    put(24, &(HEADER_SIZE as u32).to_le_bytes());
    put(soff::KIND, &KIND_STREAM.to_le_bytes());
    let flags = match g.backpressure {
        Backpressure::Block => 0,
        Backpressure::DropOldest => FLAG_DROP_OLDEST,
    };
    put(soff::FLAGS, &flags.to_le_bytes());
    put(soff::CAPACITY, &(g.capacity as u32).to_le_bytes());
    put(soff::MAX_BYTES, &g.max_bytes.to_le_bytes());
    put(soff::SLOT_SIZE, &g.slot_size.to_le_bytes());
    put(soff::SLOTS_OFFSET, &g.slots_offset.to_le_bytes());
    put(soff::MAX_READERS, &g.max_readers.to_le_bytes());
    put(soff::MAX_WRITERS, &g.max_writers.to_le_bytes());
    put(soff::READERS_OFFSET, &g.readers_offset.to_le_bytes());
    put(soff::WRITERS_OFFSET, &g.writers_offset.to_le_bytes());
    put(soff::DTYPE, &g.dtype.map_or(0, Dtype::code).to_le_bytes());
    put(soff::NDIM, &(g.shape.len() as u32).to_le_bytes());
    for (i, e) in g.shape.iter().enumerate() {
        put(soff::SHAPE + 8 * i, &e.to_le_bytes());
    }
    put(soff::MUTEX_SIZE, &id.mutex_size.to_le_bytes());
    put(soff::MUTEX_ABI, &id.mutex_abi.to_le_bytes());
    put(168, &id.creation_id);
    put(184, &id.created_ns.to_le_bytes());
    put(192, &id.creator_pid.to_le_bytes());
    put(soff::MAX_GROUPS, &g.max_groups.to_le_bytes());
    put(soff::GROUPS_OFFSET, &g.groups_offset.to_le_bytes());
    p
}

/// The reserved header bytes of a stream, checked to be zero at open (18.5). Half-open.
pub const STREAM_RESERVED: [(usize, usize); 6] = [
    (208, 256),
    (288, 320),
    (328, 384),
    (408, 448),
    (456, 512),
    (576, HEADER_SIZE),
];

/// The ranges of page 0 a stream opener copies and checks: the identity and the reserved bytes.
pub(crate) const STREAM_CHECKED_RANGES: [(usize, usize); 6] = [
    (0, 256),
    (288, 320),
    (328, 384),
    (408, 448),
    (456, 512),
    (576, HEADER_SIZE),
];

/// What a writer does when the ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backpressure {
    /// The slowest attached reader gates the writers.
    Block,
    /// Writers never wait; a lapped reader counts what it lost.
    DropOldest,
}

impl Backpressure {
    /// "block" or "drop_oldest".
    pub fn name(self) -> &'static str {
        match self {
            Backpressure::Block => "block",
            Backpressure::DropOldest => "drop_oldest",
        }
    }
}

/// Every size and offset of a stream (docs/LAYOUT.md section 17).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamGeometry {
    /// Slots in the ring.
    pub capacity: u64,
    /// Payload bytes a slot holds.
    pub max_bytes: u64,
    /// Backpressure.
    pub backpressure: Backpressure,
    /// Reader entries.
    pub max_readers: u32,
    /// Writer entries.
    pub max_writers: u32,
    /// Group entries (0: no group table).
    pub max_groups: u32,
    /// `None`: byte messages; else each message is one frame of this dtype and `shape`.
    pub dtype: Option<Dtype>,
    /// A frame's extents (empty for byte messages).
    pub shape: Vec<u64>,
    /// Bytes of a slot: 64 + round_up(max_bytes, 64).
    pub slot_size: u64,
    /// 4096.
    pub readers_offset: u64,
    /// The writer table.
    pub writers_offset: u64,
    /// The group table, 0 when there is none.
    pub groups_offset: u64,
    /// The ring (page aligned).
    pub slots_offset: u64,
    /// Bytes of the whole stream.
    pub total_size: u64,
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// The one function that decides a stream's sizes and offsets (docs/LAYOUT.md section 17), its
/// checks in the spec's order; each refusal is [`Error::Argument`] (an unknown dtype code:
/// [`Error::Dtype`]). `dtype` 0 is a byte stream.
#[allow(clippy::too_many_arguments)]
pub fn compute_stream_geometry(
    capacity: u64,
    max_bytes: u64,
    backpressure: Backpressure,
    max_readers: u32,
    max_writers: u32,
    max_groups: u32,
    dtype: u32,
    shape: &[u64],
) -> Result<StreamGeometry> {
    let arg = |m: String| Err(Error::Argument(m));
    if !(1..=MAX_STREAM_CAPACITY).contains(&capacity) {
        return arg(format!(
            "capacity must be 1 to 2**30 messages, got {capacity}"
        ));
    }
    if !(1..=MAX_MESSAGE_BYTES).contains(&max_bytes) {
        return arg(format!(
            "max_bytes must be 1 to 2**30 bytes, got {max_bytes}"
        ));
    }
    if !(1..=MAX_TABLE_ENTRIES).contains(&max_readers) {
        return arg(format!("max_readers must be 1 to 1024, got {max_readers}"));
    }
    if !(1..=MAX_TABLE_ENTRIES).contains(&max_writers) {
        return arg(format!("max_writers must be 1 to 1024, got {max_writers}"));
    }
    if max_groups > MAX_TABLE_ENTRIES {
        return arg(format!("max_groups must be 0 to 1024, got {max_groups}"));
    }
    let frame = if dtype == 0 {
        if !shape.is_empty() {
            return arg("a byte stream has no shape".into());
        }
        None
    } else {
        let d = Dtype::from_code(dtype)
            .ok_or_else(|| Error::Dtype(format!("unknown dtype code {dtype}")))?;
        if shape.len() > MAX_DIMS {
            return arg("a frame has at most 8 dimensions".into());
        }
        let mut bytes = u64::from(d.itemsize());
        for &e in shape {
            if e != 0 && bytes > MAX_MESSAGE_BYTES / e {
                return arg("a frame is limited to 2**30 bytes".into());
            }
            bytes *= e;
        }
        if bytes != max_bytes {
            return arg(format!(
                "a frame of this dtype and shape is {bytes} bytes, not {max_bytes}"
            ));
        }
        Some(d)
    };
    // max_bytes ≤ 2^30 and every count ≤ 2^30 or 1024: nothing below overflows a u64.
    let slot_size = SLOT_HEADER_SIZE + round_up(max_bytes, 64);
    if capacity > MAX_RING_BYTES / slot_size {
        return arg("capacity * max_bytes is too large: the ring would exceed 2**40 bytes".into());
    }
    let page = HEADER_SIZE as u64;
    let readers_offset = page;
    let writers_offset = readers_offset + READER_ENTRY_SIZE * u64::from(max_readers);
    let writers_end = writers_offset + WRITER_ENTRY_SIZE * u64::from(max_writers);
    let groups_offset = if max_groups == 0 { 0 } else { writers_end };
    let slots_offset = round_up(writers_end + GROUP_ENTRY_SIZE * u64::from(max_groups), page);
    Ok(StreamGeometry {
        capacity,
        max_bytes,
        backpressure,
        max_readers,
        max_writers,
        max_groups,
        dtype: frame,
        shape: shape.to_vec(),
        slot_size,
        readers_offset,
        writers_offset,
        groups_offset,
        slots_offset,
        total_size: round_up(slots_offset + capacity * slot_size, page),
    })
}

/// The kind of a segment, by a look at its first page (docs/LAYOUT.md section 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// Layout version 1: a record.
    Record,
    /// Layout version 2, kind 2: a stream.
    Stream,
    /// Anything else (too short, another magic, another version or kind).
    Unknown,
}

fn u32_at(page: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(page: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"))
}

/// The dispatch of section 16 over the first bytes of a file of `file_size` bytes.
pub fn peek_kind(page: &[u8; HEADER_SIZE], file_size: u64) -> SegmentKind {
    if file_size < HEADER_SIZE as u64 || page[..8] != MAGIC {
        return SegmentKind::Unknown;
    }
    match (u32_at(page, 8), u32_at(page, soff::KIND)) {
        (1, _) => SegmentKind::Record,
        (2, KIND_STREAM) => SegmentKind::Stream,
        _ => SegmentKind::Unknown,
    }
}

/// Checks a stream's page 0 (a private copy) against a file of `file_size` bytes, as
/// docs/LAYOUT.md section 22 lists it (S3 to S19), in that order, and returns its geometry;
/// the first failure is the [`Error::Layout`] returned, S5 to S19 prefixed "segment /x: ".
/// Never panics, whatever the bytes.
pub fn validate_stream_header(
    page: &[u8; HEADER_SIZE],
    file_size: u64,
    canon: &str,
) -> Result<StreamGeometry> {
    if file_size < HEADER_SIZE as u64 {
        return Err(Error::Layout(format!(
            "segment {canon} is {file_size} bytes, smaller than the xshm header: not an xshm \
             segment, or truncated"
        )));
    }
    if page[..8] == MAGIC && u32_at(page, 8) == 1 {
        return Err(Error::Layout(format!(
            "segment {canon} is a record, not a stream: open it with SharedMemoryManager.open"
        )));
    }
    validate_fields(page, file_size, canon).map_err(|e| e.prefixed(&format!("segment {canon}: ")))
}

fn validate_fields(
    page: &[u8; HEADER_SIZE],
    file_size: u64,
    canon: &str,
) -> Result<StreamGeometry> {
    let bad = |m: String| Err(Error::Layout(m));
    layout::validate_prefix(page, canon)?;
    let version = u32_at(page, 8);
    if version != STREAM_LAYOUT_VERSION {
        return bad(format!(
            "layout version {version} is not supported (this build reads versions 1 and 2)"
        ));
    }
    let header_size = u32_at(page, 24);
    if header_size as usize != HEADER_SIZE {
        return bad(format!("header_size {header_size} is not {HEADER_SIZE}"));
    }
    let kind = u32_at(page, soff::KIND);
    if kind != KIND_STREAM {
        return bad(format!("kind {kind} is not a stream (2)"));
    }
    let flags = u32_at(page, soff::FLAGS);
    if flags & !FLAG_DROP_OLDEST != 0 {
        return bad(format!("unknown flags {flags}"));
    }
    let ndim = u32_at(page, soff::NDIM);
    if ndim as usize > MAX_DIMS {
        return bad(format!("ndim {ndim} exceeds 8"));
    }
    let dtype = u32_at(page, soff::DTYPE);
    if dtype == 0 && ndim != 0 {
        return bad("a byte stream (dtype 0) has ndim 0".into());
    }
    if dtype != 0 && Dtype::from_code(dtype).is_none() {
        return bad(format!("unknown dtype code {dtype}"));
    }
    let shape_at = |i: usize| u64_at(page, soff::SHAPE + 8 * i);
    if (ndim as usize..MAX_DIMS).any(|i| shape_at(i) != 0) {
        return bad("unused shape entries are not zero".into());
    }
    let mutex_size = u32_at(page, soff::MUTEX_SIZE);
    if mutex_size == 0 || mutex_size > 64 {
        return bad(format!(
            "mutex_size {mutex_size} does not fit the 64-byte mutex slot"
        ));
    }
    for (start, end) in STREAM_RESERVED {
        if let Some(i) = (start..end).find(|&i| page[i] != 0) {
            return bad(format!(
                "reserved header byte {i} is not zero (a newer layout, or corrupt)"
            ));
        }
    }
    let shape: Vec<u64> = (0..ndim as usize).map(shape_at).collect();
    let backpressure = if flags & FLAG_DROP_OLDEST != 0 {
        Backpressure::DropOldest
    } else {
        Backpressure::Block
    };
    let g = compute_stream_geometry(
        u64::from(u32_at(page, soff::CAPACITY)),
        u64_at(page, soff::MAX_BYTES),
        backpressure,
        u32_at(page, soff::MAX_READERS),
        u32_at(page, soff::MAX_WRITERS),
        u32_at(page, soff::MAX_GROUPS),
        dtype,
        &shape,
    )
    .map_err(|e| Error::Layout(format!("impossible geometry: {e}")))?;
    if u64_at(page, soff::SLOT_SIZE) != g.slot_size
        || u64_at(page, soff::SLOTS_OFFSET) != g.slots_offset
        || u64_at(page, soff::READERS_OFFSET) != g.readers_offset
        || u64_at(page, soff::WRITERS_OFFSET) != g.writers_offset
        || u64_at(page, soff::GROUPS_OFFSET) != g.groups_offset
    {
        return bad(
            "sizes or offsets in the header do not match its capacity, max_bytes and tables".into(),
        );
    }
    let total = u64_at(page, 16);
    if total != g.total_size {
        return bad(format!(
            "total_size {total} does not match the layout ({})",
            g.total_size
        ));
    }
    if g.total_size > file_size {
        return bad(format!(
            "segment is truncated: header says {} bytes, only {file_size} exist",
            g.total_size
        ));
    }
    debug_assert_eq!(u32_at(page, 12), STATE_READY);
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(c: u64, b: u64, r: u32, w: u32, g: u32) -> Result<StreamGeometry> {
        compute_stream_geometry(c, b, Backpressure::Block, r, w, g, 0, &[])
    }

    #[test]
    fn the_worked_rows_of_section_17() {
        let rows = [
            (
                (1024, 1024, 16, 64, 16),
                (1088, 6144, 10240, 16384, 1130496),
            ),
            ((1024, 1024, 16, 64, 0), (1088, 6144, 0, 12288, 1126400)),
            ((4, 64, 16, 64, 0), (128, 6144, 0, 12288, 16384)),
            ((8, 100, 4, 4, 2), (192, 4608, 4864, 8192, 12288)),
            ((8, 100, 4, 4, 1024), (192, 4608, 4864, 204800, 208896)),
            ((1000, 100, 1024, 1024, 0), (192, 135168, 0, 200704, 393216)),
            (
                (1 << 24, 65472, 1, 1, 0),
                (65536, 4224, 0, 8192, (1 << 40) + 8192),
            ),
        ];
        for ((c, b, r, w, g), (slot, wo, go, so, total)) in rows {
            let x = geo(c, b, r, w, g).unwrap();
            assert_eq!(
                (
                    x.slot_size,
                    x.writers_offset,
                    x.groups_offset,
                    x.slots_offset,
                    x.total_size
                ),
                (slot, wo, go, so, total),
                "{c} {b} {r} {w} {g}"
            );
        }
        let f = compute_stream_geometry(
            8,
            3686400,
            Backpressure::Block,
            16,
            64,
            0,
            11,
            &[480, 640, 3],
        )
        .unwrap();
        assert_eq!(
            (f.slot_size, f.slots_offset, f.total_size),
            (3686464, 12288, 29507584)
        );
        assert_eq!(f.dtype, Some(Dtype::Float32));
        assert!(geo((1 << 24) + 1, 65472, 1, 1, 0).is_err());
        assert!(geo(1 << 30, 1024, 16, 64, 0).is_err());
        assert!(geo(8, 100, 4, 4, 1025).is_err());
        let e = compute_stream_geometry(
            4,
            1 << 30,
            Backpressure::Block,
            16,
            64,
            0,
            3,
            &[1 << 15, 1 << 15, 2],
        )
        .unwrap_err();
        assert!(e.to_string().contains("limited to 2**30"), "{e}");
        let e = compute_stream_geometry(4, 8, Backpressure::Block, 1, 1, 0, 99, &[1]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Dtype);
        assert!(compute_stream_geometry(4, 8, Backpressure::Block, 1, 1, 0, 0, &[1]).is_err());
        assert!(compute_stream_geometry(4, 7, Backpressure::Block, 1, 1, 0, 11, &[2]).is_err());
        for bad in [
            (0, 1, 1, 1, 0),
            (1, 0, 1, 1, 0),
            (1, 1, 0, 1, 0),
            (1, 1, 1, 1025, 0),
        ] {
            assert!(geo(bad.0, bad.1, bad.2, bad.3, bad.4)
                .unwrap_err()
                .is_argument());
        }
    }

    proptest::proptest! {
        #[test]
        fn random_pages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
                                    at in 0usize..HEADER_SIZE, size in proptest::num::u64::ANY) {
            let mut p = Box::new([0u8; HEADER_SIZE]);
            p[..8].copy_from_slice(&MAGIC);
            p[8] = 2;
            p[12..16].copy_from_slice(&STATE_READY.to_le_bytes());
            p[24..28].copy_from_slice(&4096u32.to_le_bytes());
            p[28] = 2;
            for (i, b) in bytes.iter().enumerate() {
                p[(at + i) % HEADER_SIZE] = *b;
            }
            let _ = validate_stream_header(&p, size, "/x");
            let _ = peek_kind(&p, size);
        }
    }
}
