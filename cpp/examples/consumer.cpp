// Example consumer: opens a segment (waiting for its producer), waits for each publish, reads
// a consistent snapshot and checks it is record `counter` of the demo's producers (below),
// until COUNTER_END is seen or SECONDS pass. Prints one line of figures. The values are read as
// the segment's own element type (float64 -> double, float32 -> float, ...): a typed read with
// another type throws xshm::DtypeError.
//   xshm_consumer NAME [SECONDS=5] [COUNTER_END=0]
#include <xshm/xshm.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

// Record k of the demo's producers (producer.cpp, xshm demo): message "tick k" and values
// v[i] = |(i + k) % 32 - 16|, a wave moving one step per publish, so that a snapshot mixing
// two publishes would show.
int wave(std::size_t i, std::uint64_t k) { return std::abs(static_cast<int>((i + k) % 32) - 16); }

template <class T>
bool is_record(const std::vector<T>& v, std::uint64_t k, const std::string& message) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (v[i] != static_cast<T>(wave(i, k))) return false;
  return message == "tick " + std::to_string(k);
}

template <class T>
int consume(xshm::SharedMemoryManager& m, double seconds, std::uint64_t end) {
  std::vector<T> values;
  std::string message;
  std::vector<double> latency_us;
  long torn = 0;
  std::uint64_t seq = m.seq();
  const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < stop) {
    auto next = m.wait_for(seq, std::chrono::milliseconds(100));
    if (!next) continue;
    // A typed read: T must be the segment's element type (xshm::DtypeError otherwise).
    const xshm::RecordInfo info = m.read_into(values, &message);
    // The publish stamp is CLOCK_REALTIME, the clock system_clock reads on Linux.
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    latency_us.push_back(std::chrono::duration<double, std::micro>(now).count() - info.timestamp_ns / 1e3);
    seq = info.seq;
    torn += !is_record(values, info.counter, message);
    if (end != 0 && info.counter >= end) break;
  }
  std::sort(latency_us.begin(), latency_us.end());
  auto pct = [&](double p) {
    return latency_us.empty() ? 0.0 : latency_us[static_cast<std::size_t>(p * (latency_us.size() - 1))];
  };
  std::printf(
      "{\"consumer\": \"cpp\", \"dtype\": \"%s\", \"updates\": %zu, \"torn\": %ld, \"latency_us_p50\": %.1f, "
      "\"latency_us_p99\": %.1f}\n",
      xshm::dtype_info(m.dtype()).name, latency_us.size(), torn, pct(0.5), pct(0.99));
  return torn == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s NAME [SECONDS] [COUNTER_END]\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const double seconds = argc > 2 ? std::atof(argv[2]) : 5.0;
  const std::uint64_t end = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0;
  try {
    xshm::OpenOptions o;
    o.readonly = true;
    o.timeout = std::chrono::seconds(10);
    auto m = xshm::SharedMemoryManager::open(name, o);
    switch (m.dtype()) {  // the segment describes itself: one instantiation per element type
      case xshm::Dtype::Float64:
        return consume<double>(m, seconds, end);
      case xshm::Dtype::Float32:
        return consume<float>(m, seconds, end);
      case xshm::Dtype::Int64:
        return consume<std::int64_t>(m, seconds, end);
      case xshm::Dtype::Int32:
        return consume<std::int32_t>(m, seconds, end);
      case xshm::Dtype::UInt8:
        return consume<std::uint8_t>(m, seconds, end);
      default:
        std::fprintf(
            stderr,
            "consumer: %s holds %s values; this example reads float64, float32, int64, int32, uint8\n",
            name.c_str(), xshm::dtype_info(m.dtype()).name);
        return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
