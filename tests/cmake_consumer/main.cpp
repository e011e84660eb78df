// Creates a segment, publishes, reads back: proves the installed header and target work.
#include <xshm/xshm.hpp>

#include <unistd.h>
#include <cstdio>
#include <string>

int main() {
  const std::string name = "/xshm-cmake-consumer-" + std::to_string(::getpid());
  auto m = xshm::SharedMemoryManager::create(name);
  m.publish(std::vector<double>(100, 4.0), "from an installed package", 7);
  const xshm::Snapshot s = m.read();
  m.unlink();
  std::printf("%s %llu\n", s.message.c_str(), static_cast<unsigned long long>(s.counter));
  return s.counter == 7 && s.values<double>()[99] == 4.0 ? 0 : 1;
}
