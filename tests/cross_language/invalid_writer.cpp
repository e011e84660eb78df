// Test helper: a C++ writer that publishes a message slot holding bytes that are not UTF-8
// ("ok", 0xFF, "no"), as a foreign or buggy writer might.
#include <xshm/xshm.hpp>

#include <cstdio>
#include <string_view>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    auto m = xshm::SharedMemoryManager::open(argv[1]);
    m.publish(std::string_view("ok\xFFno", 5), std::uint64_t{1});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
