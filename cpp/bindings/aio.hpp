// xshm._core's side of asyncio (python/xshm/_aio.py drives it): a SleepTicket as Python holds
// it (_Ticket: prepared by SharedMemoryManager._prepare_wait or StreamReader._prepare_wait,
// watched by the process's notifier for one event loop's _Inbox), and the notice a closing
// handle gives the coroutines waiting on it. The notifier (cpp/include/xshm/notifier.hpp)
// never touches Python: it posts keys to the inbox's eventfd, which the loop polls.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include <xshm/futex_ring.hpp>
#include <xshm/notifier.hpp>
#include <xshm/sleep_ticket.hpp>

namespace xshm_py {

namespace py = pybind11;

class PyReader;

/// A prepared sleep held by a coroutine. `owner` is the handle it waits on (post_owner() ends
/// it when the handle closes); a stream reader's ticket is also the reader's receive in
/// progress (PyReader::ticket) until released.
class PyTicket {
 public:
  PyTicket(xshm::SleepTicket t, const void* owner, PyReader* reader, py::object holder);
  ~PyTicket();
  PyTicket(const PyTicket&) = delete;
  PyTicket& operator=(const PyTicket&) = delete;

  /// Hands the ticket to the notifier: `key` goes to `inbox` on a change, at `deadline_ns`
  /// (CLOCK_MONOTONIC, as time.monotonic_ns(); None: none) or at the ticket's recheck.
  void watch(const std::shared_ptr<xshm::Inbox>& inbox, std::uint64_t key, const py::object& deadline_ns);
  /// Arms the wait on the loop's io_uring instead: `key` completes on `ring` on a change (the
  /// deadline and the recheck are the loop's timers).
  void arm(const std::shared_ptr<xshm::FutexRing>& ring, std::uint64_t key);
  /// Withdraws the watch or the ring's wait (`fired`: its key came, nothing to withdraw) and
  /// gives the sleeper count back. Idempotent.
  void release(bool fired = false);
  /// The handle is closing under the wait: the sleep ends now (the key is posted), and a watch
  /// or arm still to come raises ClosedError instead of sleeping. Never throws.
  void close_wait() noexcept;
  bool armed() const { return t_.armed(); }
  /// Nanoseconds after which to look again without a wake, or None.
  py::object recheck_ns() const;
  const void* owner() const { return owner_; }

 private:
  xshm::SleepTicket t_;
  const void* owner_;
  PyReader* reader_;
  py::object holder_;  // keeps the reader (and so `reader_`) alive while the ticket is held
  xshm::Notifier* notifier_ = nullptr;
  std::uint64_t watch_ = 0;
  std::shared_ptr<xshm::FutexRing> ring_;
  std::uint64_t ring_key_ = 0;
  bool closing_ = false;
};

/// A Python _Ticket over `t` (armed), waiting on `owner`.
py::object make_ticket(xshm::SleepTicket t, const void* owner, PyReader* reader = nullptr,
                       py::object holder = py::none());

/// Ends the watches of coroutines waiting on `owner`, which is closing: they look again and
/// find it closed.
void notify_closing(const void* owner) noexcept;

/// Creates _Inbox, _FutexRing, _Ticket, _notifier_info and _io_uring in the module.
void register_aio(py::module_& mod);

/// `xshm._aio.<name>`, imported once.
py::object aio_function(const char* name);

}  // namespace xshm_py
