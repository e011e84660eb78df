//! The bytes of a record segment, layout version 1 (docs/LAYOUT.md sections 4 to 8): the
//! constants, the header offsets, the dtypes, the one function that computes every size and
//! offset from the creation parameters ([`compute_geometry`]) and the checks an opener makes
//! ([`validate_header`]). Pure: no OS calls, no shared memory (the opener hands a private copy
//! of page 0), so every function here runs under Miri.
#![forbid(unsafe_code)] // pure: no OS calls, no unsafe (src/lib.rs, "Safety")

use crate::error::{Error, Result};

/// The layout version this crate reads and writes.
pub const LAYOUT_VERSION: u32 = 1;
/// The first 8 bytes of every xshm segment.
pub const MAGIC: [u8; 8] = *b"XSHMSEG\0";
/// The `state` of a segment its creator has finished ("REDY" little-endian).
pub const STATE_READY: u32 = 0x5944_4552;
/// Bytes of page 0, the header.
pub const HEADER_SIZE: usize = 4096;
/// The most dimensions a values array has.
pub const MAX_DIMS: usize = 8;
/// The largest values array, in bytes (2^40).
pub const MAX_VALUES_BYTES: u64 = 1 << 40;
/// The largest message slot, in bytes (2^24).
pub const MAX_MESSAGE_CAPACITY: u64 = 1 << 24;
/// Flag bit: the segment keeps a backup slot.
pub const FLAG_BACKUP: u32 = 1;
const KNOWN_FLAGS: u32 = FLAG_BACKUP;
const CACHE_LINE: u64 = 64;

/// Byte offsets of the header fields (docs/LAYOUT.md section 5), as `cpp/include/xshm/layout.hpp`
/// asserts them.
pub mod off {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u32` layout_version.
    pub const LAYOUT_VERSION: usize = 8;
    /// `u32` state, atomic: 0 while building, then READY.
    pub const STATE: usize = 12;
    /// `u64` total_size.
    pub const TOTAL_SIZE: usize = 16;
    /// `u32` header_size.
    pub const HEADER_SIZE: usize = 24;
    /// `u32` flags (the stream family's `kind` in layout version 2).
    pub const FLAGS: usize = 28;
    /// `u32` dtype code.
    pub const DTYPE: usize = 32;
    /// `u32` itemsize.
    pub const ITEMSIZE: usize = 36;
    /// `u32` ndim.
    pub const NDIM: usize = 40;
    /// `u32` message_capacity.
    pub const MESSAGE_CAPACITY: usize = 44;
    /// `[u64; 8]` shape.
    pub const SHAPE: usize = 48;
    /// `u64` values_size.
    pub const VALUES_SIZE: usize = 112;
    /// `u64` record_size.
    pub const RECORD_SIZE: usize = 120;
    /// `[u64; 2]` record_offset (live, backup).
    pub const RECORD_OFFSET: usize = 128;
    /// `u32` values_offset within a record.
    pub const VALUES_OFFSET: usize = 144;
    /// `u32` message_offset within a record.
    pub const MESSAGE_OFFSET: usize = 148;
    /// `u32` mutex_size.
    pub const MUTEX_SIZE: usize = 152;
    /// `u32` mutex_abi.
    pub const MUTEX_ABI: usize = 156;
    /// `[u8; 16]` creation_id.
    pub const CREATION_ID: usize = 160;
    /// `i64` created_ns.
    pub const CREATED_NS: usize = 176;
    /// `u32` creator_pid.
    pub const CREATOR_PID: usize = 184;
    /// `u64` seq, atomic: completed publishes.
    pub const SEQ: usize = 256;
    /// `u32` epoch, atomic: the futex word, bumped after every publish.
    pub const EPOCH: usize = 264;
    /// `u32` waiters, atomic: processes sleeping on the epoch.
    pub const WAITERS: usize = 268;
    /// `u32` owner_pid, atomic: the pid holding the writer mutex, 0 none.
    pub const OWNER_PID: usize = 320;
    /// `u32` recoveries, atomic: dead writers recovered from.
    pub const RECOVERIES: usize = 324;
    /// The writer mutex, a `pthread_mutex_t` of at most 64 bytes.
    pub const MUTEX: usize = 384;
    /// Record slot: `u64` lock, the slot's seqlock word (odd while written).
    pub const SLOT_LOCK: usize = 0;
    /// Record slot: the meta words after the lock (seq, counter, timestamp_ns, writer_pid and
    /// message_len), four `u64` words.
    pub const SLOT_META: usize = 8;
}

/// The header bytes no field of version 1 uses: zero, so that a later layout can give them a
/// meaning only together with a new layout_version. Half-open ranges.
pub const RESERVED: [(usize, usize); 4] = [(188, 256), (272, 320), (328, 384), (448, HEADER_SIZE)];

/// The byte ranges of page 0 an opener copies and checks: the identity fields and the
/// reserved bytes, never the control words written after creation (seq, epoch, waiters,
/// owner_pid, recoveries) nor the mutex.
pub(crate) const CHECKED_RANGES: [(usize, usize); 4] =
    [(0, 256), (272, 320), (328, 384), (448, HEADER_SIZE)];

/// Element types of the values array, every one little-endian. The codes are part of the
/// layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Dtype {
    Bool = 1,
    Int8,
    UInt8,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float16,
    Float32,
    Float64,
    Complex64,
    Complex128,
}

const DTYPES: [(Dtype, &str, u32); 14] = [
    (Dtype::Bool, "bool", 1),
    (Dtype::Int8, "int8", 1),
    (Dtype::UInt8, "uint8", 1),
    (Dtype::Int16, "int16", 2),
    (Dtype::UInt16, "uint16", 2),
    (Dtype::Int32, "int32", 4),
    (Dtype::UInt32, "uint32", 4),
    (Dtype::Int64, "int64", 8),
    (Dtype::UInt64, "uint64", 8),
    (Dtype::Float16, "float16", 2),
    (Dtype::Float32, "float32", 4),
    (Dtype::Float64, "float64", 8),
    (Dtype::Complex64, "complex64", 8),
    (Dtype::Complex128, "complex128", 16),
];

impl Dtype {
    /// The dtype of a code read from a segment, or `None` when the code is unknown.
    pub fn from_code(code: u32) -> Option<Dtype> {
        DTYPES.iter().find(|d| d.0 as u32 == code).map(|d| d.0)
    }

    /// The code stored in the header.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// numpy's canonical name ("float64", ...).
    pub fn name(self) -> &'static str {
        DTYPES[self as usize - 1].1
    }

    /// Bytes per element.
    pub fn itemsize(self) -> u32 {
        DTYPES[self as usize - 1].2
    }

    /// Parses numpy's canonical names ("float64", "int8", ...) and "<f8"-style codes.
    pub fn parse(name: &str) -> Result<Dtype> {
        if let Some(d) = DTYPES.iter().find(|d| d.1 == name) {
            return Ok(d.0);
        }
        let code = match name {
            "?" | "|b1" => Dtype::Bool,
            "i1" | "|i1" => Dtype::Int8,
            "u1" | "|u1" => Dtype::UInt8,
            "<i2" => Dtype::Int16,
            "<u2" => Dtype::UInt16,
            "<i4" => Dtype::Int32,
            "<u4" => Dtype::UInt32,
            "<i8" => Dtype::Int64,
            "<u8" => Dtype::UInt64,
            "<f2" => Dtype::Float16,
            "<f4" => Dtype::Float32,
            "<f8" => Dtype::Float64,
            "<c8" => Dtype::Complex64,
            "<c16" => Dtype::Complex128,
            _ => {
                return Err(Error::Dtype(format!(
                    "unsupported dtype '{name}': xshm carries little-endian bool, int8..int64, \
                     uint8..uint64, float16/32/64 and complex64/128"
                )))
            }
        };
        Ok(code)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything an opener needs about a segment, computed from the creation parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The element type.
    pub dtype: Dtype,
    /// The extents of the values array (at most 8).
    pub shape: Vec<u64>,
    /// Bytes of the values array: prod(shape) * itemsize.
    pub values_size: u64,
    /// Bytes of the message slot.
    pub message_capacity: u32,
    /// Whether the segment keeps a backup slot.
    pub backup: bool,
    /// Bytes of one record slot.
    pub record_size: u64,
    /// Offsets of the live and the backup slot (0 without backup).
    pub record_offset: [u64; 2],
    /// Offset of the values within a slot.
    pub values_offset: u32,
    /// Offset of the message within a slot.
    pub message_offset: u32,
    /// Bytes of the whole segment, a multiple of 4096.
    pub total_size: u64,
}

impl Geometry {
    /// The number of elements.
    pub fn count(&self) -> u64 {
        self.values_size / u64::from(self.dtype.itemsize())
    }

    /// 2 with a backup slot, else 1.
    pub fn slots(&self) -> usize {
        if self.backup {
            2
        } else {
            1
        }
    }
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// The one place that decides sizes and offsets (docs/LAYOUT.md section 6). Refuses, with
/// [`Error::Argument`], shapes and capacities the layout cannot hold.
pub fn compute_geometry(
    dtype: Dtype,
    shape: &[u64],
    message_capacity: u64,
    backup: bool,
) -> Result<Geometry> {
    if shape.len() > MAX_DIMS {
        return Err(Error::Argument(format!(
            "shape has {} dimensions; at most {MAX_DIMS} are supported",
            shape.len()
        )));
    }
    let too_large =
        || Error::Argument("shape is too large: the values array would exceed 2**40 bytes".into());
    let mut bytes = u64::from(dtype.itemsize());
    for &extent in shape {
        if extent != 0 && bytes > MAX_VALUES_BYTES / extent {
            return Err(too_large());
        }
        bytes *= extent;
    }
    if bytes > MAX_VALUES_BYTES {
        return Err(too_large());
    }
    if message_capacity > MAX_MESSAGE_CAPACITY {
        return Err(Error::Argument(format!(
            "message_capacity {message_capacity} exceeds the limit of {MAX_MESSAGE_CAPACITY} bytes"
        )));
    }
    // Both bounded above (2^40 and 2^24): no sum below can overflow a u64.
    let values_rounded = round_up(bytes, CACHE_LINE);
    let message_rounded = round_up(message_capacity, CACHE_LINE);
    let (values_offset, message_offset, record_size) =
        if CACHE_LINE + values_rounded > u64::from(u32::MAX) {
            // Large arrays put the message first so both offsets fit in 32 bits.
            let values_offset = CACHE_LINE + message_rounded;
            (values_offset, CACHE_LINE, values_offset + values_rounded)
        } else {
            let message_offset = CACHE_LINE + values_rounded;
            (CACHE_LINE, message_offset, message_offset + message_rounded)
        };
    let header = HEADER_SIZE as u64;
    let slots = if backup { 2 } else { 1 };
    Ok(Geometry {
        dtype,
        shape: shape.to_vec(),
        values_size: bytes,
        message_capacity: message_capacity as u32,
        backup,
        record_size,
        record_offset: [header, if backup { header + record_size } else { 0 }],
        values_offset: values_offset as u32,
        message_offset: message_offset as u32,
        total_size: round_up(header + record_size * slots, header),
    })
}

fn u32_at(page: &[u8; HEADER_SIZE], at: usize) -> u32 {
    u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(page: &[u8; HEADER_SIZE], at: usize) -> u64 {
    u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"))
}

/// How to remove a segment that was never made ready, for the errors that report one.
pub(crate) fn never_ready_removal(canon: &str) -> String {
    let bare = canon.strip_prefix('/').unwrap_or(canon);
    let bare = if bare.is_empty() { "NAME" } else { bare };
    format!("if nothing is creating it, remove it with unlink(force=True) / xshm rm --force {bare}")
}

/// The checks every layout version shares, in their order: the page is there, the ready
/// marker, the magic (docs/LAYOUT.md section 8, items 3 to 5).
pub(crate) fn validate_prefix(page: &[u8; HEADER_SIZE], canon: &str) -> Result<()> {
    let state = u32_at(page, off::STATE);
    let magic_ok = page[..8] == MAGIC;
    // A creator that stopped before writing the header leaves a zero page: "never made
    // ready", not "bad magic".
    if state != STATE_READY && (magic_ok || page[0] == 0) {
        return Err(Error::Layout(format!(
            "state is {state}, not READY: the segment was never made ready (its creator stopped \
             before finishing it, or is still creating it); {}",
            never_ready_removal(canon)
        )));
    }
    if !magic_ok {
        return Err(Error::Layout("bad magic: not an xshm segment".into()));
    }
    Ok(())
}

/// Checks the header of a segment whose file has `file_size` bytes, as docs/LAYOUT.md section 8
/// ("What an opener must refuse") lists it, in that order, and returns its geometry; the
/// first failure is the [`Error::Layout`] returned. `page` is a private copy of page 0 (the
/// control words and the mutex may be anything). `canon` names the segment in the removal
/// hint of one never made ready. Never panics, whatever the bytes.
pub fn validate_header(page: &[u8; HEADER_SIZE], file_size: u64, canon: &str) -> Result<Geometry> {
    if file_size < HEADER_SIZE as u64 {
        return Err(Error::Layout(format!(
            "segment is {file_size} bytes, smaller than the xshm header ({HEADER_SIZE}): not an \
             xshm segment, or truncated"
        )));
    }
    validate_prefix(page, canon)?;
    let version = u32_at(page, off::LAYOUT_VERSION);
    let flags = u32_at(page, off::FLAGS);
    if version == 2 && flags == 2 {
        return Err(Error::Layout(
            "it is a stream (layout version 2), not a record: open it with Stream.open".into(),
        ));
    }
    if version != LAYOUT_VERSION {
        return Err(Error::Layout(format!(
            "layout version {version} is not supported (this build reads version \
             {LAYOUT_VERSION})"
        )));
    }
    let header_size = u32_at(page, off::HEADER_SIZE);
    if header_size as usize != HEADER_SIZE {
        return Err(Error::Layout(format!(
            "header_size {header_size} is not {HEADER_SIZE}"
        )));
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::Layout(format!("unknown flags {flags}")));
    }
    let code = u32_at(page, off::DTYPE);
    let dtype = Dtype::from_code(code)
        .ok_or_else(|| Error::Layout(format!("unknown dtype code {code}")))?;
    let itemsize = u32_at(page, off::ITEMSIZE);
    if itemsize != dtype.itemsize() {
        return Err(Error::Layout(format!(
            "itemsize {itemsize} does not match dtype {dtype}"
        )));
    }
    let ndim = u32_at(page, off::NDIM);
    if ndim as usize > MAX_DIMS {
        return Err(Error::Layout(format!("ndim {ndim} exceeds 8")));
    }
    let shape_at = |i: usize| u64_at(page, off::SHAPE + 8 * i);
    if (ndim as usize..MAX_DIMS).any(|i| shape_at(i) != 0) {
        return Err(Error::Layout("unused shape entries are not zero".into()));
    }
    let mutex_size = u32_at(page, off::MUTEX_SIZE);
    if mutex_size == 0 || mutex_size > 64 {
        return Err(Error::Layout(format!(
            "mutex_size {mutex_size} does not fit the 64-byte mutex slot"
        )));
    }
    for (start, end) in RESERVED {
        if let Some(i) = (start..end).find(|&i| page[i] != 0) {
            return Err(Error::Layout(format!(
                "reserved header byte {i} is not zero (a newer layout, or corrupt)"
            )));
        }
    }
    let shape: Vec<u64> = (0..ndim as usize).map(shape_at).collect();
    let backup = flags & FLAG_BACKUP != 0;
    let capacity = u32_at(page, off::MESSAGE_CAPACITY);
    let g = compute_geometry(dtype, &shape, u64::from(capacity), backup)
        .map_err(|e| Error::Layout(format!("impossible geometry: {e}")))?;
    if u64_at(page, off::VALUES_SIZE) != g.values_size
        || u64_at(page, off::RECORD_SIZE) != g.record_size
        || u64_at(page, off::RECORD_OFFSET) != g.record_offset[0]
        || u64_at(page, off::RECORD_OFFSET + 8) != g.record_offset[1]
        || u32_at(page, off::VALUES_OFFSET) != g.values_offset
        || u32_at(page, off::MESSAGE_OFFSET) != g.message_offset
    {
        return Err(Error::Layout(
            "sizes or offsets in the header do not match its shape, dtype and capacity".into(),
        ));
    }
    let total = u64_at(page, off::TOTAL_SIZE);
    if total != g.total_size {
        return Err(Error::Layout(format!(
            "total_size {total} does not match the layout ({})",
            g.total_size
        )));
    }
    if g.total_size > file_size {
        return Err(Error::Layout(format!(
            "segment is truncated: header says {} bytes, only {file_size} exist",
            g.total_size
        )));
    }
    Ok(g)
}

/// The identity fields of a new segment, as its creator writes them before the ready marker
/// (everything of page 0 but the state, the control words and the mutex).
pub(crate) struct Identity {
    pub mutex_size: u32,
    pub mutex_abi: u32,
    pub creation_id: [u8; 16],
    pub created_ns: i64,
    pub creator_pid: u32,
}

/// Page 0 of a new segment with its identity fields filled in and `state` still 0.
pub(crate) fn header_image(g: &Geometry, id: &Identity) -> Box<[u8; HEADER_SIZE]> {
    let mut p = Box::new([0u8; HEADER_SIZE]);
    let mut put = |at: usize, bytes: &[u8]| p[at..at + bytes.len()].copy_from_slice(bytes);
    put(off::MAGIC, &MAGIC);
    put(off::LAYOUT_VERSION, &LAYOUT_VERSION.to_le_bytes());
    put(off::TOTAL_SIZE, &g.total_size.to_le_bytes());
    put(off::HEADER_SIZE, &(HEADER_SIZE as u32).to_le_bytes());
    let flags = if g.backup { FLAG_BACKUP } else { 0 };
    put(off::FLAGS, &flags.to_le_bytes());
    put(off::DTYPE, &g.dtype.code().to_le_bytes());
    put(off::ITEMSIZE, &g.dtype.itemsize().to_le_bytes());
    put(off::NDIM, &(g.shape.len() as u32).to_le_bytes());
    put(off::MESSAGE_CAPACITY, &g.message_capacity.to_le_bytes());
    for (i, e) in g.shape.iter().enumerate() {
        put(off::SHAPE + 8 * i, &e.to_le_bytes());
    }
    put(off::VALUES_SIZE, &g.values_size.to_le_bytes());
    put(off::RECORD_SIZE, &g.record_size.to_le_bytes());
    put(off::RECORD_OFFSET, &g.record_offset[0].to_le_bytes());
    put(off::RECORD_OFFSET + 8, &g.record_offset[1].to_le_bytes());
    put(off::VALUES_OFFSET, &g.values_offset.to_le_bytes());
    put(off::MESSAGE_OFFSET, &g.message_offset.to_le_bytes());
    put(off::MUTEX_SIZE, &id.mutex_size.to_le_bytes());
    put(off::MUTEX_ABI, &id.mutex_abi.to_le_bytes());
    put(off::CREATION_ID, &id.creation_id);
    put(off::CREATED_NS, &id.created_ns.to_le_bytes());
    put(off::CREATOR_PID, &id.creator_pid.to_le_bytes());
    p
}

/// Tag of the libc and architecture whose `pthread_mutex_t` a creator initialised: only
/// writers need to agree on it (docs/LAYOUT.md section 5).
pub fn mutex_abi_tag() -> u32 {
    let libc: u32 = if cfg!(target_env = "gnu") { 1 } else { 2 };
    let arch: u32 = if cfg!(target_arch = "x86_64") {
        1
    } else if cfg!(target_arch = "aarch64") {
        2
    } else {
        0xff
    };
    (libc << 8) | arch
}

/// A shape as numpy writes a tuple: "()", "(5,)", "(2, 3)".
pub fn format_shape(shape: &[u64]) -> String {
    let items: Vec<String> = shape.iter().map(u64::to_string).collect();
    match items.len() {
        1 => format!("({},)", items[0]),
        _ => format!("({})", items.join(", ")),
    }
}

/// What differs between the layout of an existing segment and the one asked for, field by
/// field: "shape (100,) there, (5,) asked; ...". Empty when they agree.
pub(crate) fn layout_differences(there: &Geometry, asked: &Geometry) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut add = |field: &str, a: String, b: String| {
        out.push(format!("{field} {a} there, {b} asked"));
    };
    if there.dtype != asked.dtype {
        add("dtype", there.dtype.to_string(), asked.dtype.to_string());
    }
    if there.shape != asked.shape {
        add(
            "shape",
            format_shape(&there.shape),
            format_shape(&asked.shape),
        );
    }
    if there.message_capacity != asked.message_capacity {
        add(
            "message capacity",
            there.message_capacity.to_string(),
            asked.message_capacity.to_string(),
        );
    }
    let on = |b: bool| if b { "on" } else { "off" }.to_string();
    if there.backup != asked.backup {
        add("backup", on(there.backup), on(asked.backup));
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_page(g: &Geometry) -> Box<[u8; HEADER_SIZE]> {
        let id = Identity {
            mutex_size: 40,
            mutex_abi: 0x101,
            creation_id: [7; 16],
            created_ns: 1,
            creator_pid: 2,
        };
        let mut p = header_image(g, &id);
        p[off::STATE..off::STATE + 4].copy_from_slice(&STATE_READY.to_le_bytes());
        p
    }

    fn layout_err(r: Result<Geometry>) -> String {
        match r {
            Err(Error::Layout(m)) => m,
            other => panic!("expected a layout error, got {other:?}"),
        }
    }

    #[test]
    fn the_worked_rows_of_the_spec() {
        let g = compute_geometry(Dtype::Float64, &[100], 256, true).unwrap();
        assert_eq!(
            (
                g.values_size,
                g.values_offset,
                g.message_offset,
                g.record_size
            ),
            (800, 64, 896, 1152)
        );
        assert_eq!((g.record_offset, g.total_size), ([4096, 5248], 8192));
        let g = compute_geometry(Dtype::UInt8, &[], 0, false).unwrap();
        assert_eq!((g.values_size, g.record_size, g.total_size), (1, 128, 8192));
        assert_eq!(g.record_offset, [4096, 0]);
        // Zero extents make an empty array, whatever the other extents.
        let g = compute_geometry(Dtype::Float64, &[0, 1 << 41], 0, true).unwrap();
        assert_eq!(g.values_size, 0);
        assert!(compute_geometry(Dtype::Float64, &[1 << 41, 0], 0, true).is_err());
        // Large arrays put the message first.
        let g = compute_geometry(Dtype::UInt8, &[1 << 33], 100, false).unwrap();
        assert_eq!((g.message_offset, g.values_offset), (64, 192));
        assert_eq!(g.record_size, 192 + (1 << 33));
        assert!(compute_geometry(Dtype::UInt8, &[(1 << 40) + 1], 0, true).is_err());
        assert!(compute_geometry(Dtype::UInt8, &[1 << 40], 0, true).is_ok());
        assert!(compute_geometry(Dtype::UInt8, &[1], (1 << 24) + 1, true).is_err());
        assert!(compute_geometry(Dtype::UInt8, &[1; 9], 0, true).is_err());
    }

    #[test]
    fn dtypes_round_trip() {
        for code in 1..=14 {
            let d = Dtype::from_code(code).unwrap();
            assert_eq!(d.code(), code);
            assert_eq!(Dtype::parse(d.name()).unwrap(), d);
        }
        assert_eq!(Dtype::from_code(0), None);
        assert_eq!(Dtype::from_code(15), None);
        assert_eq!(Dtype::parse("<f8").unwrap(), Dtype::Float64);
        assert_eq!(Dtype::Complex128.itemsize(), 16);
        assert!(matches!(Dtype::parse(">f8"), Err(Error::Dtype(_))));
    }

    #[test]
    fn a_good_header_validates_and_each_bad_field_is_named() {
        let g = compute_geometry(Dtype::Float32, &[2, 3], 100, true).unwrap();
        let page = good_page(&g);
        assert_eq!(validate_header(&page, g.total_size, "/x").unwrap(), g);
        let mutate = |at: usize, bytes: &[u8]| {
            let mut p = page.clone();
            p[at..at + bytes.len()].copy_from_slice(bytes);
            layout_err(validate_header(&p, g.total_size, "/x"))
        };
        assert!(mutate(off::STATE, &[0; 4]).contains("not READY"));
        assert!(mutate(off::STATE, &[0; 4]).contains("xshm rm --force x"));
        assert!(mutate(0, b"NOTXSHM\0").contains("bad magic"));
        assert!(mutate(off::LAYOUT_VERSION, &3u32.to_le_bytes()).contains("layout version 3"));
        let mut stream = page.clone();
        stream[8..12].copy_from_slice(&2u32.to_le_bytes());
        stream[28..32].copy_from_slice(&2u32.to_le_bytes());
        assert!(layout_err(validate_header(&stream, g.total_size, "/x")).contains("stream"));
        assert!(mutate(off::HEADER_SIZE, &8192u32.to_le_bytes()).contains("header_size"));
        assert!(mutate(off::FLAGS, &5u32.to_le_bytes()).contains("unknown flags 5"));
        assert!(mutate(off::DTYPE, &99u32.to_le_bytes()).contains("dtype code 99"));
        assert!(mutate(off::ITEMSIZE, &8u32.to_le_bytes()).contains("itemsize 8"));
        assert!(mutate(off::NDIM, &9u32.to_le_bytes()).contains("ndim 9"));
        assert!(mutate(off::SHAPE + 8 * 5, &[1]).contains("unused shape"));
        assert!(mutate(off::MUTEX_SIZE, &0u32.to_le_bytes()).contains("mutex_size 0"));
        assert!(mutate(off::MUTEX_SIZE, &65u32.to_le_bytes()).contains("mutex_size 65"));
        assert!(mutate(300, &[1]).contains("reserved header byte 300"));
        assert!(mutate(4095, &[1]).contains("reserved header byte 4095"));
        assert!(mutate(off::SHAPE, &(1u64 << 60).to_le_bytes()).contains("impossible geometry"));
        assert!(mutate(off::VALUES_SIZE, &[1]).contains("sizes or offsets"));
        assert!(mutate(off::MESSAGE_OFFSET, &[1]).contains("sizes or offsets"));
        assert!(mutate(off::TOTAL_SIZE, &[0, 0, 1]).contains("total_size"));
        // The control words and the mutex are not checked.
        let mut p = page.clone();
        p[off::SEQ] = 9;
        p[off::OWNER_PID] = 9;
        p[off::MUTEX] = 9;
        assert!(validate_header(&p, g.total_size, "/x").is_ok());
        assert!(layout_err(validate_header(&page, g.total_size - 1, "/x")).contains("truncated"));
        assert!(layout_err(validate_header(&page, 4095, "/x")).contains("smaller than"));
        // A zero page was never made ready; a foreign one is not xshm.
        let zero = Box::new([0u8; HEADER_SIZE]);
        assert!(layout_err(validate_header(&zero, 8192, "/x")).contains("never made ready"));
        let foreign = Box::new([b'A'; HEADER_SIZE]);
        assert!(layout_err(validate_header(&foreign, 8192, "/x")).contains("bad magic"));
    }

    #[test]
    fn the_first_bad_field_is_the_one_reported() {
        let g = compute_geometry(Dtype::Float64, &[4], 8, false).unwrap();
        let mut p = good_page(&g);
        p[off::HEADER_SIZE] = 1; // item 7
        p[off::DTYPE] = 99; // item 9
        p[500] = 1; // item 14
        assert!(layout_err(validate_header(&p, g.total_size, "/x")).contains("header_size"));
    }

    #[test]
    fn shapes_are_written_as_numpy_tuples() {
        assert_eq!(format_shape(&[]), "()");
        assert_eq!(format_shape(&[5]), "(5,)");
        assert_eq!(format_shape(&[2, 3]), "(2, 3)");
    }

    proptest::proptest! {
        #[test]
        fn random_pages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                    at in 0usize..HEADER_SIZE, size in proptest::num::u64::ANY) {
            let g = compute_geometry(Dtype::Int16, &[3, 5], 20, true).unwrap();
            let mut p = good_page(&g);
            for (i, b) in bytes.iter().enumerate() {
                p[(at + i) % HEADER_SIZE] = *b;
            }
            let _ = validate_header(&p, size, "/x");
        }

        #[test]
        fn geometry_is_aligned_and_fits(code in 1u32..=14,
                                        shape in proptest::collection::vec(0u64..1000, 0..4),
                                        cap in 0u64..=(1 << 24), backup in proptest::bool::ANY) {
            let g = compute_geometry(Dtype::from_code(code).unwrap(), &shape, cap, backup).unwrap();
            proptest::prop_assert_eq!(g.values_offset % 64, 0);
            proptest::prop_assert_eq!(g.message_offset % 64, 0);
            proptest::prop_assert_eq!(g.record_size % 64, 0);
            proptest::prop_assert_eq!(g.total_size % 4096, 0);
            proptest::prop_assert!(u64::from(g.values_offset) + g.values_size <= g.record_size);
            proptest::prop_assert!(u64::from(g.message_offset) + cap <= g.record_size);
            proptest::prop_assert!(4096 + g.record_size * g.slots() as u64 <= g.total_size);
        }
    }
}
