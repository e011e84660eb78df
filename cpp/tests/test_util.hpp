// Helpers shared by the C++ tests: unique segment names that are always unlinked.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <string>

namespace xshm_test {

/// A unique segment name, unlinked when the scope ends (whatever the test did).
class ScopedName {
 public:
  ScopedName() {
    static std::atomic<int> n{0};
    name_ = "/xshm-ctest-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
  }
  ~ScopedName() { ::shm_unlink(name_.c_str()); }
  const std::string& str() const { return name_; }

 private:
  std::string name_;
};

}  // namespace xshm_test
