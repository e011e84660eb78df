// The definitions behind aio.hpp.
#include "aio.hpp"

#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <unordered_set>
#include <utility>

#include "stream.hpp"

namespace xshm_py {

namespace {

/// The tickets alive in this process, for notify_closing() (touched with the GIL held).
std::unordered_set<PyTicket*>& live_tickets() {
  static auto* s = new std::unordered_set<PyTicket*>();  // leaked: tickets may die at exit
  return *s;
}

}  // namespace

PyTicket::PyTicket(xshm::SleepTicket t, const void* owner, PyReader* reader, py::object holder)
    : t_(std::move(t)), owner_(owner), reader_(reader), holder_(std::move(holder)) {
  if (reader_ != nullptr) reader_->ticket = this;
  live_tickets().insert(this);
}

PyTicket::~PyTicket() {
  release();
  live_tickets().erase(this);
}

void PyTicket::arm(const std::shared_ptr<xshm::FutexRing>& ring, std::uint64_t key) {
  if (closing_) throw xshm::ClosedError("the handle was closed while a coroutine waited on it");
  if (!t_.armed()) throw xshm::ArgumentError("this wait ticket was released");
  if (notifier_ != nullptr || ring_) throw xshm::ArgumentError("this wait ticket is already watched");
  if (!ring) throw xshm::ArgumentError("no ring");
  ring->wait(t_, key);
  ring_ = ring;
  ring_key_ = key;
}

void PyTicket::close_wait() noexcept {
  closing_ = true;
  if (!ring_) return;
  try {
    ring_->cancel(ring_key_);  // its key completes (cancelled): the waiter looks again
  } catch (const xshm::Error&) {
    // the ring is failing: the wait ends when the word moves on or the loop's ring closes
  }
}

py::object PyTicket::recheck_ns() const {
  if (!t_.armed() || !t_.recheck()) return py::none();
  return py::int_(static_cast<long long>(t_.recheck()->count()));
}

void PyTicket::watch(const std::shared_ptr<xshm::Inbox>& inbox, std::uint64_t key,
                     const py::object& deadline_ns) {
  if (closing_) throw xshm::ClosedError("the handle was closed while a coroutine waited on it");
  if (!t_.armed()) throw xshm::ArgumentError("this wait ticket was released");
  if (notifier_ != nullptr) throw xshm::ArgumentError("this wait ticket is already watched");
  std::int64_t deadline = xshm::Notifier::kNever;
  if (!deadline_ns.is_none()) deadline = deadline_ns.cast<std::int64_t>();
  notifier_ = &xshm::Notifier::instance();
  watch_ = notifier_->watch(t_, inbox, key, deadline, owner_);
}

void PyTicket::release(bool fired) {
  if (notifier_ != nullptr && xshm::Notifier::is_current(notifier_)) notifier_->unwatch(watch_);
  notifier_ = nullptr;
  watch_ = 0;
  if (ring_ && !fired) {
    try {
      ring_->cancel(ring_key_);
    } catch (const xshm::Error&) {
      // the ring is failing: the wait completes when the word moves on or the ring closes
    }
  }
  ring_.reset();
  t_.release();
  if (reader_ != nullptr) {
    if (reader_->ticket == this) reader_->ticket = nullptr;
    reader_ = nullptr;
  }
  holder_ = py::object();
}

py::object make_ticket(xshm::SleepTicket t, const void* owner, PyReader* reader, py::object holder) {
  return py::cast(std::make_unique<PyTicket>(std::move(t), owner, reader, std::move(holder)));
}

void notify_closing(const void* owner) noexcept {
  for (PyTicket* t : live_tickets())
    if (t->owner() == owner) t->close_wait();
  try {
    xshm::Notifier::instance().post_owner(owner);
  } catch (...) {
    // out of memory posting: the waits end at their deadline or the next publish
  }
}

py::object aio_function(const char* name) { return py::module_::import("xshm._aio").attr(name); }

void register_aio(py::module_& mod) {
  py::class_<xshm::Inbox, std::shared_ptr<xshm::Inbox>>(
      mod, "_Inbox", "Where the notifier posts the keys of one event loop's fired waits (an eventfd).")
      .def(py::init<>())
      .def("fileno", &xshm::Inbox::fd, "The eventfd: readable while keys wait.")
      .def("drain", &xshm::Inbox::drain, "The keys posted since the last drain.");
  py::class_<PyTicket>(mod, "_Ticket", "A prepared sleep on a segment's futex word (see xshm._aio).")
      .def("watch", &PyTicket::watch, py::arg("inbox"), py::arg("key"), py::arg("deadline_ns") = py::none(),
           "Post `key` to `inbox` on a change, at `deadline_ns` or at the ticket's recheck.")
      .def("arm", &PyTicket::arm, py::arg("ring"), py::arg("key"),
           "Arm the wait on `ring` (io_uring): `key` completes on a change.")
      .def("release", &PyTicket::release, py::arg("fired") = false,
           "Withdraw the watch or the ring's wait (`fired`: its key came) and give the sleeper count back.")
      .def_property_readonly("armed", &PyTicket::armed)
      .def_property_readonly("recheck_ns", &PyTicket::recheck_ns,
                             "Nanoseconds after which to look again without a wake, or None.");
  py::class_<xshm::FutexRing, std::shared_ptr<xshm::FutexRing>>(
      mod, "_FutexRing", "One event loop's io_uring of futex waits (Linux 6.7+; see _io_uring()).")
      .def(py::init<>())
      .def("fileno", &xshm::FutexRing::fd, "The ring's fd: readable while completions wait.")
      .def("drain", &xshm::FutexRing::drain, "The keys completed since the last drain.")
      .def("backlog", &xshm::FutexRing::backlog,
           "True when completions were taken off a full queue: drain soon (the fd may not say).");
  mod.def("_io_uring", &xshm::FutexRing::supported,
          "Whether io_uring futex waits work here (else the notifier threads serve asyncio).");
  mod.def(
      "_notifier_info",
      [] {
        xshm::Notifier& n = xshm::Notifier::instance();
        py::dict d;
        d["mode"] = n.mode();
        d["threads"] = n.threads();
        d["pending"] = n.pending();
        d["words_per_thread"] = n.words_per_thread();
        d["io_uring"] = xshm::FutexRing::supported();
        return d;
      },
      "How asyncio waits here: io_uring (a ring per loop, no thread) or the notifier's mode ('futex_waitv'\n"
      "or 'futex'), its threads and pending watches.");
}

}  // namespace xshm_py
