// The blocks of xshm.SharedMemoryManager: `with m.write() as rec:` (WriteBlock, and the Record
// it yields: a private copy of the record, published on a clean exit, dropped when the block
// raises) and `with m.lock():` (LockBlock). Each holds the core's WriteTransaction or LockGuard,
// which own the writer mutex and keep the segment mapped; the record's values view is tied to
// its transaction.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <xshm/writer.hpp>

#include "manager.hpp"
#include "text.hpp"

namespace xshm_py {

namespace py = pybind11;

/// The record inside `with m.write() as rec:`.
class Record {
 public:
  Record(std::shared_ptr<xshm::WriteTransaction> tx, py::array values)
      : tx_(std::move(tx)), values_(std::move(values)) {}
  py::array values() const { return values_; }
  std::uint64_t counter() const { return tx_->counter; }
  void set_counter(std::uint64_t c) { tx_->counter = c; }
  py::str message() const { return decode_message(tx_->message().data(), tx_->message().size()); }
  /// Longer than the slot: MessageTooLongError, unless `truncate` (cut on a code point).
  void set_message(const std::string& m, bool truncate = false) { tx_->set_message(m, truncate); }
  xshm::WriteTransaction& tx() { return *tx_; }

 private:
  std::shared_ptr<xshm::WriteTransaction> tx_;
  py::array values_;
};

/// `with m.write() as rec:`; publishes on a clean exit, publishes nothing when the block raises.
class WriteBlock {
 public:
  WriteBlock(Manager& m, std::optional<double> timeout) : m_(m), timeout_(timeout) {}
  Record enter() {
    if (rec_) throw xshm::ArgumentError("this write block is already active");
    auto tx = m_.begin_write(timeout_);
    const auto& shape = m_.m().shape();
    py::array values = make_view(m_.dtype_ref(), shape, tx->values(), tx, true);
    rec_.emplace(tx, values);
    return *rec_;
  }
  bool exit(const py::object& exc_type, const py::object&, const py::object&) {
    if (!rec_) return false;
    Record rec = std::move(*rec_);
    rec_.reset();
    if (exc_type.is_none()) {
      seq_ = rec.tx().commit();
    } else {
      rec.tx().abort();
    }
    return false;
  }
  std::optional<std::uint64_t> seq() const { return seq_; }

 private:
  Manager& m_;
  std::optional<double> timeout_;
  std::optional<Record> rec_;
  std::optional<std::uint64_t> seq_;
};

/// `with m.lock():` the writer mutex for the caller's own critical section.
class LockBlock {
 public:
  LockBlock(Manager& m, std::optional<double> timeout) : m_(m), timeout_(timeout) {}
  void enter() {
    if (guard_) throw xshm::ArgumentError("this lock block is already active");
    guard_ = m_.lock(timeout_);
  }
  bool exit(const py::object&, const py::object&, const py::object&) {
    if (guard_) guard_->unlock();
    guard_.reset();
    return false;
  }

 private:
  Manager& m_;
  std::optional<double> timeout_;
  std::shared_ptr<xshm::LockGuard> guard_;
};

/// Adds Record, WriteBlock and LockBlock to the module.
void register_blocks(py::module_& mod);

}  // namespace xshm_py
