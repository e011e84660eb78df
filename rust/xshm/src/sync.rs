//! The atomics the protocol is written against: the standard library's, or loom's under
//! `cfg(loom)`, so that the model checker explores the real protocol code (src/protocol.rs).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::fence;
pub(crate) use std::sync::atomic::Ordering;
