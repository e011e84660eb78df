// The golden segments of tests/vectors/ (segments.tsv says what each must give): each file is
// copied into a fresh segment and opened through the public API, read-only for the reader's
// expectations and writable for the writer's. tests/unit/test_vectors.py checks the same rows.
// The golden streams of tests/vectors/streams/ (streams.tsv, written from docs/LAYOUT.md Part II
// alone) are checked the same way through Stream::open, a reader at 'oldest' and a writer.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "xshm/xshm.hpp"

namespace {

using Row = std::map<std::string, std::string>;

std::vector<std::string> split(const std::string& line, char sep = '\t') {
  std::vector<std::string> cells;
  std::size_t start = 0;
  for (;;) {
    const std::size_t tab = line.find(sep, start);
    cells.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return cells;
    start = tab + 1;
  }
}

std::vector<Row> manifest(const std::string& path = std::string(XSHM_VECTORS) + "/segments.tsv") {
  std::ifstream in(path);
  std::vector<Row> rows;
  std::vector<std::string> columns;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> cells = split(line);
    if (columns.empty()) {
      columns = cells;
      continue;
    }
    if (cells.size() != columns.size()) throw std::runtime_error(path + ": bad row: " + line);
    Row r;
    for (std::size_t i = 0; i < cells.size(); ++i) r[columns[i]] = cells[i];
    rows.push_back(r);
  }
  if (rows.empty()) throw std::runtime_error(path + ": no rows");
  return rows;
}

std::vector<unsigned char> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<unsigned char> file_bytes(const std::string& file) {
  return read_all(std::string(XSHM_VECTORS) + "/" + file);
}

/// Copies `bytes` into the segment `name` (ScopedName removes it).
void install_bytes(const std::vector<unsigned char>& bytes, const xshm_test::ScopedName& name) {
  const int fd = ::open(("/dev/shm" + name.str()).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

/// Copies a vector's bytes into the segment `name` (ScopedName removes it).
void install(const Row& row, const xshm_test::ScopedName& name) {
  const std::vector<unsigned char> bytes = file_bytes(row.at("file"));
  ASSERT_FALSE(bytes.empty()) << row.at("file");
  install_bytes(bytes, name);
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

// ---------------------------------------------------------------------------------------------
// Streams (tests/vectors/streams/streams.tsv; its comment lines say what each column means).

namespace {

using namespace std::chrono_literals;

const std::string kStreams = std::string(XSHM_VECTORS) + "/streams";

std::vector<Row> stream_manifest() { return manifest(kStreams + "/streams.tsv"); }

std::vector<unsigned char> stream_file(const Row& r) { return read_all(kStreams + "/" + r.at("file")); }

/// Attaching a reader, sending and recovering lock the stream's mutex: glibc x86-64's bytes.
constexpr bool kMutexPlatform =
#if defined(__x86_64__) && defined(__GLIBC__)
    true;
#else
    false;
#endif

xshm::Stream open_stream(const xshm_test::ScopedName& name, bool readonly) {
  xshm::StreamOpenOptions opt;
  opt.readonly = readonly;
  return xshm::Stream::open(name.str(), opt);
}

struct Expected {
  std::uint64_t seq;
  std::uint32_t writer_pid;
  std::int64_t timestamp_ns;
  std::string payload_hex;
};

/// The `messages` cell: seq:writer_pid:timestamp_ns:payload-hex, space separated; '-': none.
std::vector<Expected> expected_messages(const Row& r) {
  std::vector<Expected> out;
  if (r.at("messages") == "-") return out;
  std::istringstream in(r.at("messages"));
  std::string cell;
  while (in >> cell) {
    const std::vector<std::string> f = split(cell, ':');
    if (f.size() != 4) throw std::runtime_error("streams.tsv: bad message " + cell);
    out.push_back({std::stoull(f[0]), static_cast<std::uint32_t>(std::stoul(f[1])), std::stoll(f[2]), f[3]});
  }
  return out;
}

void check_stream_header(const xshm::Stream& s, const Row& r) {
  const xshm::StreamGeometry& g = s.geometry();
  EXPECT_EQ(g.backpressure == xshm::Backpressure::block ? "block" : "drop_oldest", r.at("backpressure"));
  EXPECT_EQ(g.capacity, num(r, "capacity"));
  EXPECT_EQ(g.max_bytes, num(r, "max_bytes"));
  EXPECT_EQ(g.max_readers, num(r, "max_readers"));
  EXPECT_EQ(g.max_writers, num(r, "max_writers"));
  EXPECT_EQ(g.dtype == 0 ? std::string("bytes") : xshm::dtype_info(static_cast<xshm::Dtype>(g.dtype)).name,
            r.at("dtype"));
  EXPECT_EQ(g.dtype == 0 ? std::string("-") : shape_str(g.shape), r.at("shape"));
  EXPECT_EQ(s.head(), num(r, "head_open"));
}

/// Takes the row's messages from `rd`, in order (a hole before one is judged after kHoleCheck).
void take_expected(xshm::StreamReader& rd, const Row& r) {
  for (const Expected& e : expected_messages(r)) {
    SCOPED_TRACE("message " + std::to_string(e.seq));
    xshm::Message m;
    try {
      m = rd.recv(5s);
    } catch (const xshm::WaitTimeoutError&) {
      ADD_FAILURE() << "never came (the reader is at " << rd.cursor() << ")";
      return;
    }
    EXPECT_EQ(m.seq, e.seq);
    EXPECT_EQ(m.writer_pid, e.writer_pid);
    EXPECT_EQ(m.timestamp_ns, e.timestamp_ns);
    EXPECT_EQ(m.size, m.data.size());
    EXPECT_EQ(hex(m.data), e.payload_hex);
  }
}

bool is_stream_reading_row(const Row& r) {
  return r.at("open_as") == "stream" && (r.at("stage") == "ok" || r.at("stage") == "recv");
}

}  // namespace

TEST(StreamVectors, ManifestListsEveryFile) {
  std::set<std::string> listed;
  for (const Row& r : stream_manifest()) {
    EXPECT_FALSE(stream_file(r).empty()) << r.at("file");
    listed.insert(r.at("file"));
  }
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(kStreams)) {
    if (e.path().extension() != ".seg") continue;
    ++files;
    EXPECT_EQ(listed.count(e.path().filename().string()), 1u) << e.path() << " has no row";
  }
  EXPECT_GE(files, 40);
}

TEST(StreamVectors, Dispatch) {  // docs/LAYOUT.md 16: peek_kind reads the first page only
  for (const Row& r : stream_manifest()) {
    SCOPED_TRACE(r.at("file"));
    const std::vector<unsigned char> bytes = stream_file(r);
    const xshm::SegmentKind k = xshm::peek_kind(bytes.data(), bytes.size());
    EXPECT_EQ(k == xshm::SegmentKind::record   ? "record"
              : k == xshm::SegmentKind::stream ? "stream"
                                               : "unknown",
              r.at("peek"));
  }
}

TEST(StreamVectors, Open) {
  int checked = 0;
  for (const Row& r : stream_manifest()) {
    SCOPED_TRACE(r.at("open_as") + " opens " + r.at("file"));
    ++checked;
    xshm_test::ScopedName name;
    const std::vector<unsigned char> bytes = stream_file(r);
    install_bytes(bytes, name);
    if (r.at("open_as") == "record") {
      ASSERT_EQ(r.at("stage"), "open");
      for (bool ro : {true, false})
        expect_named_error(
            r.at("error"), [&] { open_seg(name, ro); }, r.at("error_text"));
      continue;
    }
    if (r.at("stage") == "open") {
      for (bool ro : {true, false})
        expect_named_error(
            r.at("error"), [&] { open_stream(name, ro); }, r.at("error_text"));
      continue;
    }
    check_stream_header(open_stream(name, true), r);
    if (r.at("stage") == "attach") {  // S20: only a handle that locks the mutex is refused
      expect_error<xshm::LayoutError>([&] { open_stream(name, false); }, r.at("error_text"));
      xshm::Stream ro = open_stream(name, true);
      expect_error<xshm::LayoutError>([&] { ro.reader(); }, r.at("error_text"));
    } else if (kMutexPlatform) {
      check_stream_header(open_stream(name, false), r);
    }
    EXPECT_TRUE(read_all("/dev/shm" + name.str()) == bytes) << "opening changed the segment";
  }
  EXPECT_GE(checked, 50);
}

TEST(StreamVectors, Reader) {
  if (!kMutexPlatform) GTEST_SKIP() << "attaching locks the vectors' mutex, glibc x86-64's";
  int checked = 0;
  for (const Row& r : stream_manifest()) {
    if (!is_stream_reading_row(r)) continue;
    SCOPED_TRACE(r.at("file"));
    ++checked;
    xshm_test::ScopedName name;
    install_bytes(stream_file(r), name);
    xshm::Stream s = open_stream(name, true);  // read-only forbids sending only (21.3 step 5)
    xshm::StreamReader rd = s.reader(xshm::Start::oldest);
    EXPECT_EQ(rd.cursor(), num(r, "cursor"));
    EXPECT_EQ(s.head(), num(r, "head"));  // after any recovery the attach made
    take_expected(rd, r);
    if (r.at("stage") == "recv") {
      expect_named_error(
          r.at("error"), [&] { rd.recv(1s); }, r.at("error_text"));
      continue;
    }
    EXPECT_FALSE(rd.try_recv().has_value());
    expect_error<xshm::WaitTimeoutError>([&] { rd.recv(20ms); }, "no message");
    EXPECT_EQ(rd.received(), expected_messages(r).size());
    EXPECT_EQ(rd.lost(), num(r, "lost"));
    EXPECT_EQ(rd.skipped(), num(r, "skipped"));  // dropped claims (25.7)
    EXPECT_EQ(rd.cursor(), num(r, "head"));
    EXPECT_EQ(rd.received() + rd.lost() + rd.skipped(), rd.cursor() - num(r, "cursor"));  // 28.2
    EXPECT_EQ(s.head(), num(r, "head"));
    EXPECT_EQ(s.abandoned(), num(r, "abandoned"));
    EXPECT_EQ(s.dropped(), num(r, "dropped"));
    EXPECT_EQ(s.recoveries(), num(r, "recoveries"));
    xshm::StreamReader latest = s.reader(xshm::Start::latest);
    EXPECT_EQ(latest.cursor(), num(r, "head"));
    EXPECT_FALSE(latest.try_recv().has_value());
  }
  EXPECT_GE(checked, 15);
}

TEST(StreamVectors, Writer) {  // what a reader took, then one more message from a new writer
  if (!kMutexPlatform) GTEST_SKIP() << "sending locks the vectors' mutex, glibc x86-64's";
  int checked = 0;
  for (const Row& r : stream_manifest()) {
    if (!is_stream_reading_row(r) || r.at("stage") != "ok") continue;
    SCOPED_TRACE(r.at("file"));
    ++checked;
    xshm_test::ScopedName name;
    install_bytes(stream_file(r), name);
    xshm::Stream w = open_stream(name, false);
    xshm::StreamReader rd = w.reader(xshm::Start::oldest);
    take_expected(rd, r);
    const std::uint64_t head = num(r, "head");
    std::string data = w.geometry().dtype == 0 ? std::string("after").substr(0, w.max_bytes())
                                               : std::string(w.max_bytes(), '\x5a');
    EXPECT_EQ(w.send(data.data(), data.size(), 5s), head);  // a dead gating reader is reaped
    const xshm::Message m = rd.recv(5s);
    EXPECT_EQ(m.seq, head);
    EXPECT_EQ(m.writer_pid, static_cast<std::uint32_t>(::getpid()));
    EXPECT_EQ(std::string(m.data.begin(), m.data.end()), data);
    EXPECT_EQ(rd.lost(), num(r, "lost"));
    EXPECT_EQ(rd.skipped(), num(r, "skipped"));
    EXPECT_EQ(w.head(), head + 1);
  }
  EXPECT_GE(checked, 14);
}

// docs/LAYOUT.md 25.2 step 4: a writer taking over a dead writer's entry gets the next
// generation (writer-entry offset 12, + 1), so the dead writer's WRITING slot (writer_state the
// old state) still judges dead while the new writer lives, and a reader passes it.
TEST(StreamVectors, ANewWriterDoesNotReviveADeadWritersHole) {
  if (!kMutexPlatform) GTEST_SKIP() << "sending locks the vectors' mutex, glibc x86-64's";
  for (const Row& r : stream_manifest()) {
    if (r.at("file") != "stream-writing-dead.seg") continue;
    xshm_test::ScopedName name;
    install_bytes(stream_file(r), name);
    xshm::Stream w = open_stream(name, false);
    EXPECT_EQ(w.send(std::string_view("after"), 5s), 4u);  // registers: takes entry 0 over
    const std::vector<unsigned char> b = read_all("/dev/shm" + name.str());
    std::uint64_t at = 0, state = 0;
    std::uint32_t generation = 0;
    std::memcpy(&at, b.data() + 80, 8);  // writers_offset (18.1); entry 0 (19.2):
    std::memcpy(&generation, b.data() + at + 12, 4);
    std::memcpy(&state, b.data() + at, 8);
    EXPECT_EQ(generation, 2u);
    EXPECT_EQ(state, (2u << 8) | 1u);
    xshm::Stream ro = open_stream(name, true);
    xshm::StreamReader rd = ro.reader();
    for (std::uint64_t seq : {0u, 1u, 3u, 4u}) {
      try {
        EXPECT_EQ(rd.recv(2s).seq, seq);
      } catch (const xshm::WaitTimeoutError&) {
        ADD_FAILURE() << "the reader stopped at " << rd.cursor() << ", expected message " << seq;
        return;
      }
    }
    EXPECT_EQ(rd.lost(), 1u);
    return;
  }
  FAIL() << "no stream-writing-dead.seg row";
}
