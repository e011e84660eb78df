// The meta words of a record slot after its lock word (seq, counter, timestamp, writer pid,
// message length) as one image, loaded and stored with atomic words (seqlock.hpp) so that a
// reader's copy and a writer's store of the same slot never race as plain accesses. Only a
// writer holding the mutex stores an image (writer.hpp); readers load one between two looks at
// the slot's lock word (reader.hpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "layout.hpp"
#include "seqlock.hpp"

namespace xshm::detail {

/// The meta words after the lock word, as one image: written and read with atomic words.
struct MetaImage {
  std::uint64_t seq;
  std::uint64_t counter;
  std::int64_t timestamp_ns;
  std::uint32_t writer_pid;
  std::uint32_t message_len;
};
static_assert(sizeof(MetaImage) == 32 && offsetof(RecordMeta, seq) == 8,
              "MetaImage mirrors RecordMeta from the word after the lock.");

inline MetaImage load_meta(const RecordMeta* m) noexcept {
  MetaImage img;
  seqlock::load_bytes(&img, &m->seq, sizeof img);
  return img;
}

inline void store_meta(RecordMeta* m, const MetaImage& img) noexcept {
  seqlock::store_bytes(&m->seq, &img, sizeof img);
}

}  // namespace xshm::detail
