// The C++ side of the cross-language stream tests (test_streams_cpp_python.py). Each message is
// the writer id (u32) and its counter (u64), a body of varying length, and the CRC-32 (zlib's)
// of all that, little-endian: the format of tests/cross_process/test_streams.py.
//   stream_peer send NAME N [WID=1]   sends N messages (send and send_many), prints a summary
//   stream_peer recv NAME N           attaches at the next message, takes N, checks each, prints
//                                     a summary (and exits 1 if any check failed)
// and the two commands of the cross-language stream matrix (test_stream_matrix.py), the same as
// stream_matrix_peer.py and rust/xshm/examples/stream_peer.rs:
//   stream_peer write NAME N WID      sends N messages, prints {"sent", "first_seq", "last_seq"}
//   stream_peer take NAME N PAUSE_US  attaches at the oldest message, prints {"ready": true},
//                                     takes until its cursor reaches N (pausing PAUSE_US after
//                                     each), checks each, prints a summary
//   stream_peer drain NAME 0 0        the same until a message of writer id kMarker
//   stream_peer member NAME GROUP 0   joins GROUP at the oldest message, prints ready, takes
//                                     until a message of kMarker, prints {"ks": [...], ...}
//   stream_peer hole NAME 3 WID       sends 3 messages, claims the next slot and never commits it:
//                                     prints {"claimed": SEQ} and waits to be killed
#include <unistd.h>

#include <xshm/xshm.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

constexpr auto kWait = std::chrono::seconds(120);
constexpr std::uint32_t kMarker = 0xFFFFFFFFu;  // the writer id of the message that ends a drain

std::uint32_t crc32(const unsigned char* p, std::size_t n, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::uint64_t next_random(std::uint64_t& s) {  // splitmix64
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<unsigned char> payload(std::uint32_t wid, std::uint64_t k, std::uint64_t max_bytes,
                                   std::uint64_t& rng) {
  const std::uint64_t body = next_random(rng) % (max_bytes - 16 + 1);
  std::vector<unsigned char> p(12 + body + 4);
  std::memcpy(p.data(), &wid, 4);  // little-endian hosts only, as the layout
  std::memcpy(p.data() + 4, &k, 8);
  for (std::uint64_t i = 0; i < body; ++i) p[12 + i] = static_cast<unsigned char>(next_random(rng));
  const std::uint32_t c = crc32(p.data(), p.size() - 4);
  std::memcpy(p.data() + p.size() - 4, &c, 4);
  return p;
}

xshm::Stream open(const std::string& name) {
  xshm::StreamOpenOptions o;
  o.timeout = std::chrono::seconds(10);
  return xshm::Stream::open(name, o);
}

int send(const std::string& name, std::uint64_t n, std::uint32_t wid) {
  xshm::Stream s = open(name);
  std::uint64_t rng = 0x5EED0000ull + wid;
  std::uint64_t k = 0, first = UINT64_MAX, last = 0, batches = 0;
  while (k < n) {
    const std::uint64_t batch = std::min<std::uint64_t>(n - k, next_random(rng) % 4 == 0 ? 5 : 1);
    std::vector<std::vector<unsigned char>> keep;
    for (std::uint64_t j = 0; j < batch; ++j) keep.push_back(payload(wid, k + j, s.max_bytes(), rng));
    std::uint64_t seq = 0;
    if (batch == 1) {
      seq = s.send(keep[0].data(), keep[0].size(), kWait);
    } else {
      std::vector<std::pair<const void*, std::size_t>> items;
      for (auto& p : keep) items.emplace_back(p.data(), p.size());
      seq = s.send_many(items, kWait);
      ++batches;
    }
    if (first == UINT64_MAX) first = seq - (batch - 1);
    last = seq;
    k += batch;
  }
  std::printf(
      "{\"mode\": \"send\", \"sent\": %llu, \"first_seq\": %llu, \"last_seq\": %llu, \"batches\": %llu, "
      "\"pid\": %d}\n",
      static_cast<unsigned long long>(n), static_cast<unsigned long long>(first),
      static_cast<unsigned long long>(last), static_cast<unsigned long long>(batches),
      static_cast<int>(::getpid()));
  return 0;
}

int recv(const std::string& name, std::uint64_t n) {
  xshm::Stream s = open(name);
  xshm::StreamReader r = s.reader(xshm::Start::latest);
  const std::uint64_t start = r.cursor();
  std::uint64_t torn = 0, disorder = 0, seq_gaps = 0, received = 0;
  std::uint64_t expect = start;  // the sequence number the next message should have
  std::vector<std::pair<std::uint32_t, std::uint64_t>> next_k;  // writer id, its next counter
  std::set<std::uint32_t> pids;
  std::uint32_t chain = 0;  // CRC-32 of every payload in order, as zlib.crc32 chains
  for (; received < n; ++received) {
    xshm::Message m = r.recv(kWait);
    if (m.seq < expect)
      ++disorder;
    else
      seq_gaps += m.seq - expect;
    expect = m.seq + 1;
    pids.insert(m.writer_pid);
    chain = crc32(m.data.data(), m.data.size(), chain);
    const std::size_t size = m.data.size();
    std::uint32_t c = 0, wid = 0;
    std::uint64_t k = 0;
    if (size >= 16) std::memcpy(&c, m.data.data() + size - 4, 4);
    if (size < 16 || c != crc32(m.data.data(), size - 4)) {
      ++torn;
      continue;
    }
    std::memcpy(&wid, m.data.data(), 4);
    std::memcpy(&k, m.data.data() + 4, 8);
    auto it = next_k.begin();
    while (it != next_k.end() && it->first != wid) ++it;
    if (it == next_k.end()) it = next_k.insert(next_k.end(), {wid, 0});
    if (k != it->second) ++disorder;
    it->second = k + 1;
  }
  std::string pid_list;
  for (std::uint32_t p : pids) pid_list += (pid_list.empty() ? "" : ", ") + std::to_string(p);
  std::printf(
      "{\"mode\": \"recv\", \"received\": %llu, \"lost\": %llu, \"start\": %llu, \"cursor\": %llu, "
      "\"torn\": %llu, \"disorder\": %llu, \"seq_gaps\": %llu, \"writers\": %zu, "
      "\"writer_pids\": [%s], \"crc_chain\": %u}\n",
      static_cast<unsigned long long>(r.received()), static_cast<unsigned long long>(r.lost()),
      static_cast<unsigned long long>(start), static_cast<unsigned long long>(r.cursor()),
      static_cast<unsigned long long>(torn), static_cast<unsigned long long>(disorder),
      static_cast<unsigned long long>(seq_gaps), next_k.size(), pid_list.c_str(), chain);
  return torn == 0 && disorder == 0 ? 0 : 1;
}

// The matrix's reader: every message it takes is whole (CRC) and in order (its sequence number
// and, per writer, its counter); under drop_oldest it may lose some, which it counts.
// The writer id and counter of a whole message (its CRC checked); false for a torn one.
bool parse(const xshm::Message& m, std::uint32_t& wid, std::uint64_t& k) {
  const std::size_t size = m.data.size();
  std::uint32_t c = 0;
  if (size < 16) return false;
  std::memcpy(&c, m.data.data() + size - 4, 4);
  if (c != crc32(m.data.data(), size - 4)) return false;
  std::memcpy(&wid, m.data.data(), 4);
  std::memcpy(&k, m.data.data() + 4, 8);
  return true;
}

int member(const std::string& name, const std::string& group) {
  xshm::Stream s = open(name);
  xshm::StreamReader r = s.reader(xshm::Start::oldest, group);
  std::printf("{\"ready\": true}\n");
  std::fflush(stdout);
  std::string ks;
  std::uint64_t torn = 0;
  for (;;) {
    std::uint32_t wid = 0;
    std::uint64_t k = 0;
    if (!parse(r.recv(kWait), wid, k)) {
      ++torn;
      continue;
    }
    if (wid == kMarker) break;
    ks += (ks.empty() ? "" : ", ") + std::to_string(k);
  }
  std::printf("{\"ks\": [%s], \"received\": %llu, \"lost\": %llu, \"torn\": %llu}\n", ks.c_str(),
              static_cast<unsigned long long>(r.received()), static_cast<unsigned long long>(r.lost()),
              static_cast<unsigned long long>(torn));
  return torn == 0 ? 0 : 1;
}

int take(const std::string& name, std::uint64_t n, std::uint64_t pause_us, bool until_marker = false) {
  xshm::Stream s = open(name);
  xshm::StreamReader r = s.reader(xshm::Start::oldest);
  const std::uint64_t start = r.cursor();
  std::printf("{\"ready\": true}\n");
  std::fflush(stdout);
  std::uint64_t torn = 0, disorder = 0;
  bool any = false;
  std::uint64_t last_seq = 0;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> next_k;
  while (until_marker || r.cursor() < n) {
    xshm::Message m = r.recv(kWait);
    if (any && m.seq <= last_seq) ++disorder;
    any = true;
    last_seq = m.seq;
    std::uint32_t wid = 0;
    std::uint64_t k = 0;
    if (!parse(m, wid, k)) {
      ++torn;
      continue;
    }
    if (wid == kMarker) break;
    auto it = next_k.begin();
    while (it != next_k.end() && it->first != wid) ++it;
    if (it == next_k.end()) it = next_k.insert(next_k.end(), {wid, 0});
    if (k < it->second) ++disorder;
    it->second = k + 1;
    if (pause_us != 0) ::usleep(static_cast<useconds_t>(pause_us));
  }
  std::printf(
      "{\"received\": %llu, \"lost\": %llu, \"skipped\": %llu, \"start\": %llu, \"cursor\": %llu, "
      "\"torn\": %llu, \"disorder\": %llu, \"writers\": %zu}\n",
      static_cast<unsigned long long>(r.received()), static_cast<unsigned long long>(r.lost()),
      static_cast<unsigned long long>(r.skipped()), static_cast<unsigned long long>(start),
      static_cast<unsigned long long>(r.cursor()), static_cast<unsigned long long>(torn),
      static_cast<unsigned long long>(disorder), next_k.size());
  return torn == 0 && disorder == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: %s send NAME N [WID] | recv NAME N | write NAME N WID | take NAME N PAUSE_US | "
                 "drain NAME 0 0 | member NAME GROUP 0\n",
                 argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const std::uint64_t n = std::strtoull(argv[3], nullptr, 10);
  try {
    if (mode == "send")
      return send(argv[2], n, argc > 4 ? static_cast<std::uint32_t>(std::atoi(argv[4])) : 1);
    if (mode == "recv") return recv(argv[2], n);
    if (mode == "write" && argc == 5) {
      xshm::Stream s = open(argv[2]);
      std::uint64_t rng = 0x5EED0000ull + std::strtoull(argv[4], nullptr, 10);
      const auto wid = static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 10));
      std::uint64_t k = 0, first = UINT64_MAX, last = 0;
      while (k < n) {
        const std::uint64_t batch = std::min<std::uint64_t>(n - k, next_random(rng) % 4 == 0 ? 5 : 1);
        std::vector<std::vector<unsigned char>> keep;
        for (std::uint64_t j = 0; j < batch; ++j) keep.push_back(payload(wid, k + j, s.max_bytes(), rng));
        std::vector<std::pair<const void*, std::size_t>> items;
        for (auto& p : keep) items.emplace_back(p.data(), p.size());
        const std::uint64_t seq =
            batch == 1 ? s.send(keep[0].data(), keep[0].size(), kWait) : s.send_many(items, kWait);
        if (first == UINT64_MAX) first = seq - (batch - 1);
        last = seq;
        k += batch;
      }
      std::printf("{\"sent\": %llu, \"first_seq\": %llu, \"last_seq\": %llu}\n",
                  static_cast<unsigned long long>(n), static_cast<unsigned long long>(first),
                  static_cast<unsigned long long>(last));
      return 0;
    }
    if (mode == "take" && argc == 5) return take(argv[2], n, std::strtoull(argv[4], nullptr, 10));
    if (mode == "drain" && argc == 5) return take(argv[2], 0, 0, true);
    if (mode == "member" && argc == 5) return member(argv[2], argv[3]);
    if (mode == "hole" && argc == 5) {
      xshm::Stream s = open(argv[2]);
      const auto wid = static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 10));
      std::uint64_t rng = 0x5EED0000ull + wid;
      for (std::uint64_t k = 0; k < n; ++k) {
        const std::vector<unsigned char> p = payload(wid, k, s.max_bytes(), rng);
        s.send(p.data(), p.size(), kWait);
      }
      xshm::StreamClaim c = s.claim(16, kWait);  // never committed: killed holding it
      std::printf("{\"claimed\": %llu}\n", static_cast<unsigned long long>(c.seq()));
      std::fflush(stdout);
      ::sleep(120);
      return 0;
    }
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stream_peer: %s\n", e.what());
    return 1;
  }
}
