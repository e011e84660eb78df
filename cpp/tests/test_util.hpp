// Helpers shared by the C++ tests: unique segment names that are always unlinked.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// TSan is per-process and does not model a robust mutex handed over by EOWNERDEAD after its
// owner (a thread that exited, or another process) died: it reports the new owner's unlock as
// "unlock of an unlocked mutex". Tests of that hand-over run in the plain and ASan builds.
#if defined(__SANITIZE_THREAD__)
#define XSHM_SKIP_UNDER_TSAN() GTEST_SKIP() << "TSan does not model a robust mutex handed over by EOWNERDEAD"
#else
#define XSHM_SKIP_UNDER_TSAN() (void)0
#endif

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

/// Another thread of this process holds `m`'s writer lock from construction until release()
/// or destruction (M: anything with lock() returning a guard, i.e. SharedMemoryManager).
template <class M>
class HeldLock {
 public:
  explicit HeldLock(M& m)
      : holder_([this, &m] {
          auto guard = m.lock();
          held_ = true;
          while (!release_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }) {
    while (!held_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  HeldLock(const HeldLock&) = delete;
  HeldLock& operator=(const HeldLock&) = delete;
  ~HeldLock() { release(); }
  void release() {
    release_ = true;
    if (holder_.joinable()) holder_.join();
  }

 private:
  std::atomic<bool> held_{false}, release_{false};
  std::thread holder_;
};

/// One row of tests/vectors/utf8.tsv, input decoded from hex.
struct Utf8Vector {
  std::string kind, input, n, expected, line;
};

/// Every row of the shared UTF-8 vectors (XSHM_VECTORS is set by CMake).
inline std::vector<Utf8Vector> utf8_vectors() {
  std::ifstream in(std::string(XSHM_VECTORS) + "/utf8.tsv");
  std::vector<Utf8Vector> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream row(line);
    Utf8Vector v;
    std::string hex;
    std::getline(row, v.kind, '\t');
    std::getline(row, hex, '\t');
    std::getline(row, v.n, '\t');
    std::getline(row, v.expected, '\t');
    for (std::size_t i = 0; hex != "-" && i + 1 < hex.size(); i += 2)
      v.input.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    v.line = line;
    rows.push_back(v);
  }
  return rows;
}

}  // namespace xshm_test
