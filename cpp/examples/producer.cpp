// Example producer: creates (or re-attaches to) a float64 segment and publishes record k =
// 1, 2, ...: counter k, message "tick k", values v[i] = |(i + k) % 32 - 16| (a wave moving one
// step per publish), so any consumer can check that every snapshot is one whole publish.
//   xshm_producer NAME [COUNT=1000] [RATE_HZ=1000] [--unlink]
#include <xshm/xshm.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s NAME [COUNT] [RATE_HZ] [--unlink]\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const long count = argc > 2 ? std::atol(argv[2]) : 1000;
  const double rate = argc > 3 ? std::atof(argv[3]) : 1000.0;
  const bool unlink_at_end = argc > 4 && std::strcmp(argv[4], "--unlink") == 0;
  try {
    xshm::CreateOptions opt;
    opt.exist_ok = true;
    auto m = xshm::SharedMemoryManager::create(name, opt);
    std::vector<double> values(m.geometry().count());
    const auto period = std::chrono::duration<double>(rate > 0 ? 1.0 / rate : 0.0);
    auto next = std::chrono::steady_clock::now();
    for (long k = 1; k <= count; ++k) {
      for (std::size_t i = 0; i < values.size(); ++i)
        values[i] = std::abs(static_cast<int>((i + static_cast<std::size_t>(k)) % 32) - 16);
      const std::string msg = "tick " + std::to_string(k);
      m.publish(values, msg, static_cast<std::uint64_t>(k));
      next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(period);
      std::this_thread::sleep_until(next);
    }
    std::printf("producer: published %ld records to %s (seq %llu)\n", count, m.name().c_str(),
                static_cast<unsigned long long>(m.seq()));
    if (unlink_at_end) m.unlink();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "producer: %s\n", e.what());
    return 1;
  }
  return 0;
}
