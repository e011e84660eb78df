// What the ping-pong programs of benchmarks/cpp print: one JSON line per round of one-way
// latencies, read by benchmarks/questions (latency.py, streams.py).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace bench {

constexpr std::int64_t kFastWakeNs = 10'000;  // benchmarks/common.py FAST_WAKE_NS

/// Prints {"case", "round", "n", "p50_ns", "p99_ns", "p999_ns", "fast_share"} for one round.
inline void report(const char* name, int round, std::vector<std::int64_t>& one_way) {
  std::sort(one_way.begin(), one_way.end());
  auto pct = [&](double p) { return one_way[static_cast<std::size_t>(p * (one_way.size() - 1))]; };
  const auto fast = std::lower_bound(one_way.begin(), one_way.end(), kFastWakeNs) - one_way.begin();
  std::printf(
      "{\"case\": \"%s\", \"round\": %d, \"n\": %zu, \"p50_ns\": %lld, \"p99_ns\": %lld, \"p999_ns\": "
      "%lld, \"fast_share\": %.4f}\n",
      name, round, one_way.size(), static_cast<long long>(pct(0.5)), static_cast<long long>(pct(0.99)),
      static_cast<long long>(pct(0.999)), static_cast<double>(fast) / static_cast<double>(one_way.size()));
  std::fflush(stdout);
}

}  // namespace bench
