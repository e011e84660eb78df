// libFuzzer target over a stream's validation, attach, receive and send paths: every input
// becomes the bytes of a real POSIX shared-memory object, which Stream::open() must refuse with
// xshm::LayoutError or open; then a reader attaches (reaping the dead entries the image holds),
// takes what it can without waiting, and a writer tries one send. Every refusal must be a typed
// xshm::Error, never a crash, a hang, or a read or write outside the mapping (built with
// ASan+UBSan). Anything else aborts: a finding.
//
// Input: byte 0 picks the mode, as in fuzz_open.cpp. Even: the rest is the segment, byte for
// byte. Odd: a valid stream (one of three templates, with messages, readers and a writer entry
// in it) with (offset u24 LE, value u8) edits from the rest applied, so the fuzzer spends its
// time on well-formed headers, tables and slots with wrong fields.
//
// Not fuzzed: the robust mutexes' bytes (docs/LAYOUT.md Part II: the header's `mutex`, each
// group entry's) but their kind word, which xshm checks before any lock (robust_mutex.hpp
// check_kind: glibc itself aborts on some kinds, an assertion in __pthread_tpp_change_priority
// this fuzzer found). The rest only pthread_mutex_* reads and nothing can validate: a lock word
// naming a thread that never existed makes a lock wait, then time out (a slow input, not a
// finding). Each input gets the bytes of a freshly initialised mutex, with the input's own kind
// word, in the header and in every group entry of the table its header describes (zeros in a
// free entry).
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "xshm/xshm.hpp"

namespace {

constexpr std::size_t kMutexOffset = 512;  // the stream header's `mutex` (LAYOUT.md Part II)
constexpr std::size_t kGroupEntry = 192;   // a group entry; its mutex at +64, its state at +128

template <class T>
T load_at(const std::vector<unsigned char>& b, std::size_t off) {
  T v{};
  if (off + sizeof v <= b.size()) std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

/// The mutexes of `seg` as a creator leaves them: fresh in the header and in every active
/// group entry, zeros in every free one (19.3).
void restore_mutexes(std::vector<unsigned char>& seg, const std::vector<unsigned char>& fresh) {
  auto fresh_keeping_kind = [&](unsigned char* m) {
    unsigned char kind[4];
    std::memcpy(kind, m + 16, sizeof kind);  // glibc's __kind: checked by xshm, so fuzzed
    std::memcpy(m, fresh.data(), fresh.size());
    std::memcpy(m + 16, kind, sizeof kind);
  };
  if (seg.size() >= kMutexOffset + fresh.size()) fresh_keeping_kind(seg.data() + kMutexOffset);
  const auto max_groups = load_at<std::uint32_t>(seg, 196);
  const auto groups_offset = load_at<std::uint64_t>(seg, 200);
  for (std::uint64_t i = 0; i < max_groups && groups_offset < seg.size(); ++i) {
    const std::uint64_t entry = groups_offset + i * kGroupEntry;
    if (entry + kGroupEntry > seg.size()) break;
    unsigned char* m = seg.data() + entry + 64;
    if (load_at<std::uint64_t>(seg, entry + 128) != 0)
      fresh_keeping_kind(m);
    else
      std::memset(m, 0, fresh.size());
  }
}

std::vector<std::vector<unsigned char>> g_templates;
std::vector<unsigned char> g_mutex;  // a freshly initialised, unlocked robust mutex
std::string g_name;

/// The bytes of a stream made with `o`, `sends` messages sent (sizes vary on a byte stream)
/// and readers attached, one of which took a message, and (with a group table) a member of
/// group "g" that took one: in the copy they are all dead entries.
std::vector<unsigned char> image_of(const xshm::StreamOptions& o, const char* tag, int sends) {
  const std::string name = "/xshm-fuzz-stream-template-" + std::to_string(::getpid()) + tag;
  auto s = xshm::Stream::create(name, o);
  auto r = s.reader(xshm::Start::oldest);
  auto idle = s.reader(xshm::Start::oldest);
  std::optional<xshm::StreamReader> member;
  if (o.max_groups != 0) member.emplace(s.reader(xshm::Start::oldest, "g"));
  const auto max = static_cast<std::size_t>(s.max_bytes());
  for (int i = 0; i < sends; ++i) {
    const std::size_t len = (o.dtype || max < 2) ? max : max - static_cast<std::size_t>(i % 3);
    const std::vector<unsigned char> msg(len, static_cast<unsigned char>(0x40 + i));
    if (!s.try_send(msg.data(), msg.size())) break;
  }
  (void)r.try_recv();
  if (member) (void)member->try_recv();
  std::vector<unsigned char> img(static_cast<std::size_t>(s.geometry().total_size));
  const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (fd < 0 || ::pread(fd, img.data(), img.size(), 0) != static_cast<ssize_t>(img.size())) std::abort();
  ::close(fd);
  s.unlink();
  return img;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  xshm::StreamOptions a;  // bytes, "block", a reader gating
  a.capacity = 4;
  a.max_bytes = 32;
  a.max_readers = 4;
  a.max_writers = 2;
  xshm::StreamOptions b;  // frames, "drop_oldest", lapped
  b.capacity = 8;
  b.max_bytes = 16;
  b.dtype = xshm::Dtype::Float32;
  b.shape = {2, 2};
  b.backpressure = xshm::Backpressure::drop_oldest;
  b.max_readers = 3;
  b.max_writers = 1;
  xshm::StreamOptions c;  // one slot of one byte, the reader table full
  c.capacity = 1;
  c.max_bytes = 1;
  c.max_readers = 3;
  c.max_groups = 0;  // no group table
  c.max_writers = 1;
  c.backpressure = xshm::Backpressure::drop_oldest;
  g_templates = {image_of(a, "a", 3), image_of(b, "b", 11), image_of(c, "c", 2)};
  pthread_mutex_t m;
  pthread_mutexattr_t at;
  pthread_mutexattr_init(&at);
  pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&m, &at);
  g_mutex.assign(reinterpret_cast<unsigned char*>(&m), reinterpret_cast<unsigned char*>(&m) + sizeof m);
  g_name = "/xshm-fuzz-stream-" + std::to_string(::getpid());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::vector<unsigned char> seg;
  if ((data[0] & 1) == 0) {
    seg.assign(data + 1, data + size);
  } else {
    seg = g_templates[(data[0] >> 1) % g_templates.size()];
    for (std::size_t i = 1; i + 4 <= size; i += 4) {
      const std::size_t off = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16)) % seg.size();
      seg[off] = data[i + 3];
    }
  }
  restore_mutexes(seg, g_mutex);
  const int fd = ::shm_open(g_name.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) std::abort();
  if (::write(fd, seg.data(), seg.size()) != static_cast<ssize_t>(seg.size())) std::abort();
  ::close(fd);
  try {
    auto s = xshm::Stream::open(g_name);
    (void)s.head();
    (void)s.dropped();
    try {
      auto r = s.reader(xshm::Start::oldest);
      for (int i = 0; i < 64; ++i) {
        std::optional<xshm::Message> m = r.try_recv();
        if (!m) break;
        if (m->data.size() > s.max_bytes()) std::abort();  // a receive trusted a length
      }
      (void)r.lag();
      auto view = r.try_recv_view();  // a view, read in place, then released
      if (view && view->size() > s.max_bytes()) std::abort();
    } catch (const xshm::Error&) {
    }
    try {  // a member of the image's group (or a new one): recovery of a dead member's step
      auto g = s.reader(xshm::Start::oldest, "g");
      for (int i = 0; i < 8 && g.try_recv(); ++i) {
      }
      (void)s.groups();  // counters as fuzzed: listed, not trusted to add up
    } catch (const xshm::Error&) {
    }
    const unsigned char msg[3] = {1, 2, 3};
    (void)s.try_send(msg, static_cast<std::size_t>(std::min<std::uint64_t>(sizeof msg, s.max_bytes())));
  } catch (const xshm::Error&) {
  }
  ::shm_unlink(g_name.c_str());
  return 0;
}
