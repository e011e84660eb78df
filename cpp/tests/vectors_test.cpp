// The golden segments of tests/vectors/ (segments.tsv says what each must give): each file is
// copied into a fresh segment and opened through the public API, read-only for the reader's
// expectations and writable for the writer's. tests/unit/test_vectors.py checks the same rows.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "xshm/xshm.hpp"

namespace {

using Row = std::map<std::string, std::string>;

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> cells;
  std::size_t start = 0;
  for (;;) {
    const std::size_t tab = line.find('\t', start);
    cells.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return cells;
    start = tab + 1;
  }
}

std::vector<Row> manifest() {
  std::ifstream in(std::string(XSHM_VECTORS) + "/segments.tsv");
  std::vector<Row> rows;
  std::vector<std::string> columns;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> cells = split_tabs(line);
    if (columns.empty()) {
      columns = cells;
      continue;
    }
    if (cells.size() != columns.size()) throw std::runtime_error("segments.tsv: bad row: " + line);
    Row r;
    for (std::size_t i = 0; i < cells.size(); ++i) r[columns[i]] = cells[i];
    rows.push_back(r);
  }
  return rows;
}

std::vector<unsigned char> file_bytes(const std::string& file) {
  std::ifstream in(std::string(XSHM_VECTORS) + "/" + file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Copies a vector's bytes into the segment `name` (ScopedName removes it).
void install(const Row& row, const xshm_test::ScopedName& name) {
  const std::vector<unsigned char> bytes = file_bytes(row.at("file"));
  ASSERT_FALSE(bytes.empty()) << row.at("file");
  const int fd = ::open(("/dev/shm" + name.str()).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

std::string hex(const std::vector<unsigned char>& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

std::vector<unsigned char> unhex(const std::string& s) {
  std::vector<unsigned char> out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(static_cast<unsigned char>(std::stoi(s.substr(i, 2), nullptr, 16)));
  return out;
}

std::string shape_str(const std::vector<std::uint64_t>& shape) {  // Python's str(tuple)
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

std::uint64_t num(const Row& r, const char* col) { return std::stoull(r.at(col)); }

std::uint32_t epoch(const xshm::SharedMemoryManager& m) {  // docs/LAYOUT.md: header offset 264
  std::uint32_t e;
  std::memcpy(&e, static_cast<const unsigned char*>(m.base()) + 264, sizeof e);
  return e;
}

void check_header(const xshm::SharedMemoryManager& m, const Row& r, bool recovered = false) {
  EXPECT_EQ(xshm::dtype_info(m.dtype()).name, r.at("dtype"));
  EXPECT_EQ(shape_str(m.shape()), r.at("shape"));
  EXPECT_EQ(m.backup(), r.at("backup") == "1");
  EXPECT_EQ(m.recoveries(), num(r, "recoveries") + (recovered ? 1 : 0));
  EXPECT_EQ(epoch(m), num(r, "epoch") + (recovered ? 1 : 0));
}

void check_record(const xshm::SharedMemoryManager& m, const Row& r) {
  const xshm::Snapshot s = m.read();
  EXPECT_EQ(s.seq, num(r, "read_seq"));
  EXPECT_EQ(s.counter, num(r, "counter"));
  EXPECT_EQ(s.timestamp_ns, static_cast<std::int64_t>(num(r, "timestamp_ns")));
  EXPECT_EQ(s.writer_pid, num(r, "writer_pid"));
  EXPECT_EQ(s.message, r.at("message"));
  EXPECT_EQ(hex(s.data), r.at("values"));
}

/// Runs fn, which must throw E with `text` in its message.
template <class E, class Fn>
void expect_error(Fn&& fn, const std::string& text) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << text << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

template <class Fn>
void expect_named_error(const std::string& cls, Fn&& fn, const std::string& text) {
  if (cls == "LayoutError") return expect_error<xshm::LayoutError>(fn, text);
  if (cls == "TornRecordError") return expect_error<xshm::TornRecordError>(fn, text);
  ADD_FAILURE() << "unknown error class " << cls;
}

xshm::SharedMemoryManager open_seg(const xshm_test::ScopedName& name, bool readonly) {
  xshm::OpenOptions opt;
  opt.readonly = readonly;
  return xshm::SharedMemoryManager::open(name.str(), opt);
}

}  // namespace

TEST(Vectors, ManifestListsEveryVector) {
  const std::vector<Row> rows = manifest();
  ASSERT_GE(rows.size(), 30u);
  for (const Row& r : rows) EXPECT_FALSE(file_bytes(r.at("file")).empty()) << r.at("file");
}

TEST(Vectors, Reader) {
  for (const Row& r : manifest()) {
    SCOPED_TRACE(r.at("file"));
    xshm_test::ScopedName name;
    install(r, name);
    if (r.at("stage") == "open") {
      expect_named_error(
          r.at("error"), [&] { open_seg(name, true); }, r.at("error_text"));
      continue;
    }
    auto m = open_seg(name, true);
    check_header(m, r);
    EXPECT_EQ(m.seq(), num(r, "seq"));
    if (r.at("stage") == "read")
      expect_named_error(
          r.at("error"), [&] { m.read(); }, r.at("error_text"));
    else
      check_record(m, r);
  }
}

TEST(Vectors, Writer) {
#if !(defined(__x86_64__) && defined(__GLIBC__))
  GTEST_SKIP() << "the vectors' mutex is glibc x86-64's: only readers may open them here";
#endif
  int checked = 0;
  for (const Row& r : manifest()) {
    if (r.at("writer") == "-" && r.at("stage") != "open") continue;
    SCOPED_TRACE(r.at("file"));
    ++checked;
    xshm_test::ScopedName name;
    install(r, name);
    if (r.at("stage") == "open" || r.at("writer") == "refuse") {
      const std::string& text = r.at("stage") == "open" ? r.at("error_text") : r.at("writer_error_text");
      expect_error<xshm::LayoutError>([&] { open_seg(name, false); }, text);
      continue;
    }
    auto m = open_seg(name, false);
    check_header(m, r);  // opening recovers nothing: the first lock does
    std::vector<unsigned char> values(m.geometry().values_size, 0);
    std::uint64_t next = 0;
    if (r.at("writer") == "torn") {
      // Only every field may follow a torn record.
      expect_error<xshm::TornRecordError>([&] { m.publish(nullptr, 0, std::nullopt, std::uint64_t{1}); },
                                          "give values, message and counter");
      check_header(m, r, true);
      next = num(r, "seq") + 1;
    } else {
      { auto guard = m.lock(); }
      check_header(m, r, r.at("writer") == "recover");
      EXPECT_EQ(m.seq(), num(r, "read_seq"));  // recovery published what the live slot held
      check_record(m, r);
      next = num(r, "read_seq") + 1;
      values = unhex(r.at("values"));
    }
    const std::string message = std::string("after").substr(0, m.message_capacity());
    EXPECT_EQ(m.publish(values.data(), values.size(), message, std::uint64_t{7}), next);
    const xshm::Snapshot s = m.read();
    EXPECT_EQ(s.seq, next);
    EXPECT_EQ(s.counter, 7u);
    EXPECT_EQ(s.message, message);
    EXPECT_EQ(s.data, values);
  }
  EXPECT_GE(checked, 20);
}
