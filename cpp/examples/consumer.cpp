// Example consumer: opens a segment (waiting for its producer), waits for each publish, reads
// a consistent snapshot and checks it (values all equal the counter, message "tick
// <counter>"), until COUNTER_END is seen or SECONDS pass. Prints one line of figures.
//   xshm_consumer NAME [SECONDS=5] [COUNTER_END=0]
#include <xshm/xshm.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s NAME [SECONDS] [COUNTER_END]\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const double seconds = argc > 2 ? std::atof(argv[2]) : 5.0;
  const unsigned long long end = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0;
  try {
    xshm::OpenOptions o;
    o.readonly = true;
    o.timeout = std::chrono::seconds(10);
    auto m = xshm::SharedMemoryManager::open(name, o);
    std::vector<double> values(m.geometry().count());
    std::string message;
    std::vector<double> latency_us;
    long updates = 0, torn = 0;
    std::uint64_t seq = m.seq();
    const auto stop = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < stop) {
      auto next = m.wait_for(seq, std::chrono::milliseconds(100));
      if (!next) continue;
      xshm::RecordInfo info = m.read_into(values.data(), values.size() * sizeof(double), &message);
      const std::int64_t now = xshm::detail::realtime_ns();
      seq = info.seq;
      ++updates;
      latency_us.push_back(static_cast<double>(now - info.timestamp_ns) / 1000.0);
      const bool ok = std::all_of(values.begin(), values.end(),
                                  [&](double v) { return v == static_cast<double>(info.counter); }) &&
                      message == "tick " + std::to_string(info.counter);
      torn += !ok;
      if (end != 0 && info.counter >= end) break;
    }
    std::sort(latency_us.begin(), latency_us.end());
    auto pct = [&](double p) {
      return latency_us.empty() ? 0.0 : latency_us[static_cast<std::size_t>(p * (latency_us.size() - 1))];
    };
    std::printf(
        "{\"consumer\": \"cpp\", \"updates\": %ld, \"torn\": %ld, \"latency_us_p50\": %.1f, "
        "\"latency_us_p99\": %.1f}\n",
        updates, torn, pct(0.5), pct(0.99));
    return torn == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
