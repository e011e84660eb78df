// xshm::StreamClaim: a zero-copy send. Stream::claim() marks a slot WRITING for the next
// sequence number, as a send does, and hands the caller the slot's payload to fill in place;
// commit() publishes it (protocol.hpp commit_filled), drop() or destruction withdraws it
// (cancel_claim: readers step over it and count it `skipped`, not lost: it was never sent).
// While it is open the slot is pinned: readers behind it wait for it (total order), and a
// writer that laps the ring onto it waits too (stream.hpp, Stream::claim).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "../errors.hpp"
#include "../process.hpp"
#include "protocol.hpp"
#include "segment.hpp"

namespace xshm {

/// One open claim of a slot. Move-only; one thread at a time. It keeps the stream mapped.
class StreamClaim {
 public:
  StreamClaim() = default;
  StreamClaim(StreamClaim&& o) noexcept : s_(std::move(o.s_)), seq_(o.seq_), size_(o.size_) { o.s_.reset(); }
  StreamClaim& operator=(StreamClaim&& o) noexcept {
    if (this != &o) {
      drop();
      s_ = std::move(o.s_);
      o.s_.reset();
      seq_ = o.seq_;
      size_ = o.size_;
    }
    return *this;
  }
  StreamClaim(const StreamClaim&) = delete;
  StreamClaim& operator=(const StreamClaim&) = delete;
  /// An open claim is dropped.
  ~StreamClaim() { drop(); }

  /// Whether it is still open (neither committed nor dropped).
  bool is_open() const noexcept { return s_ != nullptr; }
  /// The slot's payload, inside the stream's mapping: size() bytes to fill.
  unsigned char* data() const { return detail::StreamSegment::payload(seg().slot(seq_)); }
  /// The bytes claimed.
  std::size_t size() const noexcept { return size_; }
  /// The sequence number the message gets.
  std::uint64_t seq() const noexcept { return seq_; }

  /// Publishes the first `n` bytes (n <= size(); a frame stream's frame is whole). Throws
  /// ArgumentError for a wrong `n` (the claim stays open), Error when readers abandoned the
  /// slot first because they judged this writer dead (its process was forked away from it).
  void commit(std::size_t n) {
    detail::StreamSegment& s = seg();
    if (n > size_)
      throw ArgumentError("commit of " + std::to_string(n) + " bytes: the claim has " +
                          std::to_string(size_));
    if (s.geo.dtype != 0 && n != s.geo.max_bytes)
      throw ArgumentError("a frame of stream " + s.name + " is " + std::to_string(s.geo.max_bytes) +
                          " bytes, not " + std::to_string(n));
    const std::shared_ptr<detail::StreamSegment> keep = std::move(s_);  // closed from here on
    if (!stream_impl::commit_filled(s, seq_, n))
      throw Error("stream " + s.name + ": message " + std::to_string(seq_) +
                  " was abandoned by readers that judged its writer dead before it was committed");
  }
  void commit() { commit(size_); }

  /// Withdraws the claim: nothing is sent. Idempotent; a claim inherited across fork() is
  /// its parent's, and is left alone.
  void drop() noexcept {
    if (s_ == nullptr) return;
    if (!s_->fd.forked && s_->pid == detail::current_pid()) stream_impl::cancel_claim(*s_, seq_);
    s_.reset();
  }

 private:
  friend class Stream;
  StreamClaim(std::shared_ptr<detail::StreamSegment> s, std::uint64_t seq, std::size_t size) noexcept
      : s_(std::move(s)), seq_(seq), size_(size) {}

  detail::StreamSegment& seg() const {
    if (s_ == nullptr) throw ClosedError("the claim was already committed or dropped");
    s_->check_usable();
    return *s_;
  }

  std::shared_ptr<detail::StreamSegment> s_;
  std::uint64_t seq_ = 0;
  std::size_t size_ = 0;
};

}  // namespace xshm
