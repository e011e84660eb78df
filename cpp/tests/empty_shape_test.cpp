// Empty shapes, end to end: shape {} is numpy's 0-d array (one value); a shape with a zero
// extent, {0} or {3, 0}, is numpy's empty array: values_size 0, the record carries only its
// counter and message, and every call works on it (publish, read, read_into, transactions in
// place and staged, the values window).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "xshm/manager.hpp"
#include "xshm/window.hpp"

using namespace xshm;
using xshm_test::ScopedName;

TEST(EmptyShape, ZeroDimensionalIsOneValue) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{}, Dtype::Float64, 16});
  EXPECT_EQ(m.geometry().values_size, 8u);
  EXPECT_EQ(m.geometry().count(), 1u);
  m.publish(std::vector<double>{2.5}, "scalar", 1);
  EXPECT_EQ(m.read().values<double>(), std::vector<double>{2.5});
}

TEST(EmptyShape, AZeroExtentCarriesOnlyCounterAndMessage) {
  for (const std::vector<std::uint64_t>& shape : {std::vector<std::uint64_t>{0}, {3, 0}, {0, 1u << 20}}) {
    for (const bool backup : {true, false}) {
      ScopedName name;
      CreateOptions o{shape, Dtype::Int32, 16};
      o.backup = backup;
      auto m = SharedMemoryManager::create(name.str(), o);
      const Geometry& g = m.geometry();
      EXPECT_EQ(g.values_size, 0u);
      EXPECT_EQ(g.count(), 0u);
      EXPECT_EQ(g.values_offset, g.message_offset) << "the values take no bytes";
      EXPECT_EQ(m.publish(nullptr, 0, std::string_view("first"), std::uint64_t{1}), 1u);
      EXPECT_EQ(m.publish(std::vector<std::int32_t>{}, "second", 2), 2u) << "an empty vector is the values";
      Snapshot s = m.read();
      EXPECT_EQ(s.counter, 2u);
      EXPECT_EQ(s.message, "second");
      EXPECT_TRUE(s.values<std::int32_t>().empty());
      std::vector<std::int32_t> out{1, 2};
      std::string msg;
      EXPECT_EQ(m.read_into(out, &msg).seq, 2u);
      EXPECT_TRUE(out.empty());
      EXPECT_EQ(m.read_into(nullptr, 0).seq, 2u);
      for (WriteMode mode : {WriteMode::automatic, WriteMode::staged, WriteMode::in_place}) {
        WriteTransaction tx = m.begin_write(mode);
        EXPECT_NE(tx.values(), nullptr) << "never null, though nothing may be written there";
        EXPECT_EQ(tx.values_bytes(), 0u);
        tx.counter += 1;
        tx.set_message("tx");
        tx.commit();
      }
      EXPECT_EQ(m.read().counter, 5u);
      EXPECT_EQ(m.read().message, "tx");
      EXPECT_THROW(m.publish(std::vector<std::int32_t>{1}), ArgumentError) << "one value is too many";
    }
  }
}

TEST(EmptyShape, WithoutBackupATornEmptyRecordIsRepairedWithoutValues) {
  ScopedName name;
  CreateOptions o{{0}, Dtype::Float64, 16};
  o.backup = false;
  auto m = SharedMemoryManager::create(name.str(), o);
  {
    WriteTransaction tx = m.begin_write(WriteMode::in_place);  // an abort in place tears it
  }
  EXPECT_THROW(m.read(), TornRecordError);
  EXPECT_THROW(m.publish(nullptr, 0, std::string_view("m"), std::nullopt), TornRecordError)
      << "the counter is still missing";
  EXPECT_EQ(m.publish(nullptr, 0, std::string_view("m"), std::uint64_t{1}), 1u)
      << "counter and message are every field of a record without values";
  EXPECT_EQ(m.read().message, "m");
}

TEST(EmptyShape, TheValuesWindowOfNoValues) {
  ScopedName name;
  auto m = SharedMemoryManager::create(name.str(), CreateOptions{{0}, Dtype::Float64, 16});
  std::shared_ptr<ValuesWindow> w = ValuesWindow::map(m.segment());
  EXPECT_NE(w->values(), nullptr);
  w->detach();
  EXPECT_TRUE(w->detached());
  m.publish(nullptr, 0, std::string_view("after"), std::uint64_t{1});
  EXPECT_EQ(m.read().message, "after");
}
