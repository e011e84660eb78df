// What a user's mistakes get from the C++ API: a typed exception whose text names the problem
// (and, where there is one, the way out), never undefined behaviour. The messages of issue 13
// one by one (durations as people write them, the existing segment, the layout that differs),
// then a sweep: out-of-range timeouts, wrong byte counts, bad names and parameters, a closed
// handle, a transaction used after its end.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "test_util.hpp"
#include "xshm/manager.hpp"

using namespace xshm;
using namespace std::chrono_literals;
using xshm_test::ScopedName;

namespace {

/// The text of the E `fn` throws, or a note that it threw nothing.
template <class E, class Fn>
std::string what_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

/// The errno of the std::system_error `fn` throws, 0 when none.
int errno_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::system_error& e) {
    return e.code().value();
  }
  return 0;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

constexpr auto kNever = std::chrono::nanoseconds::max();
constexpr auto kMostNegative = std::chrono::nanoseconds::min();

}  // namespace

// ---- the messages ----

TEST(UserErrors, FormatDurationWritesDurationsAsPeopleDo) {
  EXPECT_EQ(format_duration(1s), "1 s");
  EXPECT_EQ(format_duration(1500ms), "1.5 s");
  EXPECT_EQ(format_duration(250ms), "250 ms");
  EXPECT_EQ(format_duration(20us), "20 µs");
  EXPECT_EQ(format_duration(7ns), "7 ns");
  EXPECT_EQ(format_duration(0ns), "0 s");
  EXPECT_EQ(format_duration(1234567ns), "1.235 ms");
  EXPECT_EQ(format_duration(std::chrono::nanoseconds(999'999'600)), "1 s") << "rounds up into the next unit";
  EXPECT_EQ(format_duration(std::chrono::nanoseconds(299'999'999)), "300 ms") << "0.3 s from a double";
  EXPECT_EQ(format_duration(3600s), "3600 s");
  EXPECT_EQ(format_duration(-2ms), "-2 ms");
  EXPECT_FALSE(format_duration(kNever).empty());
  EXPECT_FALSE(format_duration(kMostNegative).empty());
  EXPECT_EQ(format_duration(from_seconds(1.0).value()), "1 s");
  EXPECT_EQ(format_duration(from_seconds(0.25).value()), "250 ms");
}

TEST(UserErrors, WaitTimeoutSaysTheDuration) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  EXPECT_EQ(what_of<WaitTimeoutError>([&] { m.wait(0, 10ms); }), "no publish after sequence 0 within 10 ms");
  EXPECT_EQ(what_of<WaitTimeoutError>([&] { m.wait(0, 0ns); }), "no publish after sequence 0 within 0 s");
}

TEST(UserErrors, LockTimeoutSaysTheDurationAndTheHolder) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  xshm_test::HeldLock holder(m);
  const std::string expected = "the writer lock of " + name.str() +
                               " was not free within 20 ms (held by pid " + std::to_string(::getpid()) + ")";
  EXPECT_EQ(what_of<WaitTimeoutError>([&] { m.lock(20ms); }), expected);
  EXPECT_EQ(what_of<WaitTimeoutError>([&] { m.begin_write(20ms); }), expected);
  EXPECT_EQ(
      what_of<WaitTimeoutError>([&] { m.publish(nullptr, 0, std::nullopt, std::uint64_t{1}, false, 20ms); }),
      expected);
}

TEST(UserErrors, CreatingAnExistingSegmentSaysHowToProceed) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  EXPECT_EQ(errno_of([&] { SharedMemoryManager::create(name.str()); }), EEXIST) << "still the OS error";
  const std::string text = what_of<std::system_error>([&] { SharedMemoryManager::create(name.str()); });
  EXPECT_TRUE(contains(text, "shm_open(" + name.str() + "): File exists")) << text;
  EXPECT_TRUE(contains(text, "SharedMemoryManager.open")) << text;
  EXPECT_TRUE(contains(text, "exist_ok=True")) << text;
  EXPECT_TRUE(contains(text, "`xshm rm " + name.str().substr(1) + "`")) << text;
}

TEST(UserErrors, ExistOkNamesEveryFieldThatDiffersBothSides) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{100}, Dtype::Float64, 256});
  const auto attach = [&](CreateOptions o) {
    o.exist_ok = true;
    return what_of<LayoutError>([&] { SharedMemoryManager::create(name.str(), o); });
  };
  const std::string prefix = "segment " + name.str() + " exists with another layout: ";
  EXPECT_EQ(attach(CreateOptions{{5}, Dtype::Float64, 256}), prefix + "shape (100,) there, (5,) asked");
  EXPECT_EQ(attach(CreateOptions{{100}, Dtype::Float32, 256}), prefix + "dtype float64 there, float32 asked");
  EXPECT_EQ(attach(CreateOptions{{100}, Dtype::Float64, 16}),
            prefix + "message capacity 256 there, 16 asked");
  CreateOptions no_backup{{100}, Dtype::Float64, 256};
  no_backup.backup = false;
  EXPECT_EQ(attach(no_backup), prefix + "backup on there, off asked");
  CreateOptions all{{2, 3}, Dtype::Int8, 8};
  all.backup = false;
  EXPECT_EQ(attach(all), prefix +
                             "dtype float64 there, int8 asked; shape (100,) there, (2, 3) asked; message "
                             "capacity 256 there, 8 asked; backup on there, off asked");
  EXPECT_EQ(attach(CreateOptions{{}, Dtype::Float64, 256}), prefix + "shape (100,) there, () asked");
}

TEST(UserErrors, OpeningAMissingSegmentSaysWhatToDo) {
  ScopedName name;
  const std::string now = what_of<std::system_error>([&] { SharedMemoryManager::open(name.str()); });
  EXPECT_TRUE(contains(now, "No such file or directory: no segment of that name")) << now;
  EXPECT_TRUE(contains(now, "timeout")) << now;
  OpenOptions o;
  o.timeout = 30ms;
  EXPECT_EQ(errno_of([&] { SharedMemoryManager::open(name.str(), o); }), ENOENT);
  const std::string later = what_of<std::system_error>([&] { SharedMemoryManager::open(name.str(), o); });
  EXPECT_TRUE(contains(later, "no segment of that name appeared within 30 ms")) << later;
}

TEST(UserErrors, ASegmentNeverMadeReadySaysWhatIsKnownAndHowToRemoveIt) {
  // Only its state is known, not why: the text says that, guesses no death, and gives the way
  // out, which works.
  const std::string why = "(its creator stopped before finishing it, or is still creating it)";
  ScopedName name;
  const std::string bare = name.str().substr(1);
  const std::string removal =
      "if nothing is creating it, remove it with unlink(force=True) / xshm rm --force " + bare;
  {
    auto m = SharedMemoryManager::create(name.str());
    const int fd = ::shm_open(name.str().c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0);
    const std::uint32_t zero = 0;  // READY taken back: as a creator that stopped just before it
    ASSERT_EQ(::pwrite(fd, &zero, sizeof zero, offsetof(Header, state)), 4);
    ::close(fd);
  }
  EXPECT_EQ(what_of<LayoutError>([&] { SharedMemoryManager::open(name.str()); }),
            "segment " + name.str() + ": state is 0, not READY: the segment was never made ready " + why +
                "; " + removal);
  SharedMemoryManager::unlink(name.str(), true);
  EXPECT_EQ(errno_of([&] { SharedMemoryManager::open(name.str()); }), ENOENT);

  const int fd = ::shm_open(name.str().c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);  // never sized
  ASSERT_GE(fd, 0);
  ::close(fd);
  const std::string empty = what_of<LayoutError>([&] { SharedMemoryManager::open(name.str()); });
  EXPECT_EQ(empty, "segment " + name.str() +
                       " was never made ready: it is still empty (0 bytes) after 2 s (its creator stopped "
                       "before sizing it, or is still creating it); " +
                       removal);
  EXPECT_FALSE(contains(empty, "died"));
  SharedMemoryManager::unlink(name.str(), true);
  EXPECT_EQ(errno_of([&] { SharedMemoryManager::open(name.str()); }), ENOENT);
}

// ---- the sweep: nothing a caller passes is undefined behaviour ----

TEST(UserErrorsSweep, NegativeZeroAndHugeTimeouts) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  for (auto t : {std::chrono::nanoseconds(-1), kMostNegative, std::chrono::nanoseconds(0)}) {
    EXPECT_THROW(m.wait(0, t), WaitTimeoutError);
    EXPECT_EQ(m.wait_for(0, t, t), std::nullopt) << "a negative spin is no spin";
  }
  // Huge means forever: the free mutex is taken, a publish from another thread ends the wait.
  { LockGuard g = m.lock(kNever); }
  m.begin_write(kNever).commit();
  EXPECT_EQ(m.publish(nullptr, 0, std::nullopt, std::uint64_t{2}, false, kNever), 2u);
  std::thread later([&] {
    std::this_thread::sleep_for(20ms);
    m.publish(std::nullopt, std::uint64_t{3});
  });
  EXPECT_EQ(m.wait(2, kNever, 1ms), 3u);
  later.join();
  xshm_test::HeldLock holder(m);
  for (auto t : {std::chrono::nanoseconds(-1), kMostNegative}) {
    EXPECT_THROW(m.lock(t), WaitTimeoutError);
    EXPECT_THROW(m.begin_write(t), WaitTimeoutError);
    EXPECT_THROW(m.publish(nullptr, 0, std::nullopt, std::uint64_t{9}, false, t), WaitTimeoutError);
  }
  EXPECT_EQ(from_seconds(-1.0), std::chrono::nanoseconds(0));
  EXPECT_EQ(from_seconds(std::numeric_limits<double>::quiet_NaN()), std::nullopt);
  EXPECT_EQ(from_seconds(std::numeric_limits<double>::infinity()), std::nullopt);
  EXPECT_EQ(from_seconds(1e300), std::nullopt);
}

TEST(UserErrorsSweep, OpenWithOutOfRangeTimeouts) {
  ScopedName name;
  OpenOptions o;
  for (auto t : {std::chrono::nanoseconds(-1), kMostNegative}) {
    o.timeout = t;
    EXPECT_EQ(errno_of([&] { SharedMemoryManager::open(name.str(), o); }), ENOENT);
  }
  std::thread creator([&] {
    std::this_thread::sleep_for(50ms);
    SharedMemoryManager::create(name.str()).publish(std::nullopt, std::uint64_t{4});
  });
  o.timeout = kNever;  // forever: no overflow of the deadline
  auto m = SharedMemoryManager::open(name.str(), o);
  creator.join();
  EXPECT_EQ(m.read().counter, 4u);
  o.timeout = std::nullopt;
  o.stall_timeout = kNever;
  EXPECT_EQ(SharedMemoryManager::open(name.str(), o).read().counter, 4u);
}

TEST(UserErrorsSweep, WrongByteCounts) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{4}, Dtype::Float64, 16});
  std::vector<double> v(5);
  EXPECT_EQ(what_of<ArgumentError>([&] { m.publish(v.data(), 40); }),
            "publish: values have 40 bytes, the segment's array has 32");
  EXPECT_THROW(m.publish(v.data(), 0), ArgumentError);
  EXPECT_THROW(m.try_publish(v.data(), 8), ArgumentError);
  EXPECT_EQ(what_of<ArgumentError>([&] { m.read_into(v.data(), 40); }),
            "read_into: buffer has 40 bytes, the values array has 32");
  EXPECT_EQ(m.seq(), 0u);
}

TEST(UserErrorsSweep, BadNamesAndCreationParameters) {
  for (const char* bad : {"", "/", "a/b", "//a", ".", ".."}) {
    EXPECT_THROW(SharedMemoryManager::create(bad), ArgumentError) << bad;
    EXPECT_THROW(SharedMemoryManager::open(bad), ArgumentError) << bad;
    EXPECT_THROW(xshm::unlink(bad), ArgumentError) << bad;
  }
  EXPECT_THROW(SharedMemoryManager::create(std::string(300, 'x')), ArgumentError);
  ScopedName name;
  CreateOptions o;
  o.mode = 01000;
  EXPECT_THROW(SharedMemoryManager::create(name.str(), o), ArgumentError);
  o = CreateOptions{};
  o.shape = std::vector<std::uint64_t>(9, 1);
  EXPECT_THROW(SharedMemoryManager::create(name.str(), o), ArgumentError);
  o.shape = {std::numeric_limits<std::uint64_t>::max()};
  EXPECT_THROW(SharedMemoryManager::create(name.str(), o), ArgumentError);
  o.shape = {1ull << 32, 1ull << 32};
  EXPECT_THROW(SharedMemoryManager::create(name.str(), o), ArgumentError);
  o = CreateOptions{};
  o.message_capacity = std::numeric_limits<std::uint64_t>::max();
  EXPECT_THROW(SharedMemoryManager::create(name.str(), o), ArgumentError);
  o = CreateOptions{};
  o.dtype = static_cast<Dtype>(0);
  EXPECT_THROW(SharedMemoryManager::create(name.str(), o), DtypeError);
  o.dtype = static_cast<Dtype>(99);
  EXPECT_THROW(SharedMemoryManager::create(name.str(), o), DtypeError);
  EXPECT_THROW(parse_dtype("float128"), DtypeError);
  EXPECT_THROW(parse_dtype(""), DtypeError);
  EXPECT_EQ(::access(("/dev/shm" + name.str()).c_str(), F_OK), -1) << "no refused create left a segment";
}

TEST(UserErrorsSweep, EveryCallOnAClosedHandleIsAClosedError) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  SharedMemoryManager never_opened;
  m.close();
  for (SharedMemoryManager* h : {&m, &never_opened}) {
    EXPECT_FALSE(h->is_open());
    EXPECT_THROW(h->name(), ClosedError);
    EXPECT_THROW(h->geometry(), ClosedError);
    EXPECT_THROW(h->seq(), ClosedError);
    EXPECT_THROW(h->live_values(), ClosedError);
    EXPECT_THROW(h->read(), ClosedError);
    std::vector<double> out;
    EXPECT_THROW(h->read_into(out), ClosedError);
    EXPECT_THROW(h->publish(std::nullopt, std::uint64_t{1}), ClosedError);
    EXPECT_THROW(h->try_publish(nullptr, 0), ClosedError);
    EXPECT_THROW(h->begin_write(), ClosedError);
    EXPECT_THROW(h->try_begin_write(), ClosedError);
    EXPECT_THROW(h->lock(), ClosedError);
    EXPECT_THROW(h->try_lock(), ClosedError);
    EXPECT_THROW(h->wait(0, 0ns), ClosedError);
    EXPECT_THROW(h->unlink(), ClosedError);
    h->close();  // idempotent
  }
}

TEST(UserErrorsSweep, ATransactionAfterItsEnd) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str());
  WriteTransaction tx = m.begin_write();
  tx.set_message("kept");
  tx.commit();
  EXPECT_FALSE(tx.active());
  EXPECT_EQ(what_of<ArgumentError>([&] { tx.commit(); }),
            "the write transaction is no longer active (committed or aborted)");
  EXPECT_THROW(tx.set_message("lost"), ArgumentError) << "it would be silently lost";
  EXPECT_THROW(tx.message(), ArgumentError) << "the live slot may only be read under the mutex";
  tx.abort();  // idempotent
  EXPECT_EQ(m.read().message, "kept");
}
