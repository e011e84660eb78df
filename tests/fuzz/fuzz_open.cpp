// libFuzzer target over the C++ header's validation and read path: every input becomes the
// bytes of a real POSIX shared-memory object, which SharedMemoryManager::open() must refuse with
// xshm::LayoutError or open and read without crashing, hanging or reading outside the mapping
// (built with ASan+UBSan). TornRecordError is the documented result of reading a segment
// without backup whose record is marked mid-write. Anything else aborts: a finding.
//
// Input: byte 0 picks the mode. Even: the rest is the segment, byte for byte. Odd: a valid
// segment (one of three templates) with (offset u16 LE, value u8) edits from the rest applied,
// so the fuzzer spends its time on well-formed headers with wrong fields.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "xshm/xshm.hpp"

namespace {

std::vector<std::vector<unsigned char>> g_templates;
std::string g_name;

std::vector<unsigned char> image_of(const xshm::CreateOptions& o, const char* tag) {
  const std::string name = "/xshm-fuzz-template-" + std::to_string(::getpid()) + tag;
  auto m = xshm::SharedMemoryManager::create(name, o);
  std::vector<double> v(m.geometry().values_size / 8, 1.5);
  if (m.dtype() == xshm::Dtype::Float64) m.publish(v, "template", 3);
  std::vector<unsigned char> img(m.mapped_size());
  std::memcpy(img.data(), m.base(), img.size());
  m.unlink();
  return img;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  xshm::CreateOptions a;
  a.shape = {4};
  a.message_capacity = 16;
  xshm::CreateOptions b;
  b.shape = {2, 3};
  b.dtype = xshm::Dtype::Int16;
  b.backup = false;
  xshm::CreateOptions c;
  c.shape = {0};
  c.dtype = xshm::Dtype::Bool;
  c.message_capacity = 0;
  g_templates = {image_of(a, "a"), image_of(b, "b"), image_of(c, "c")};
  g_name = "/xshm-fuzz-" + std::to_string(::getpid());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::vector<unsigned char> seg;
  if ((data[0] & 1) == 0) {
    seg.assign(data + 1, data + size);
  } else {
    seg = g_templates[(data[0] >> 1) % g_templates.size()];
    for (std::size_t i = 1; i + 3 <= size; i += 3) {
      const std::size_t off = (data[i] | (data[i + 1] << 8)) % seg.size();
      seg[off] = data[i + 2];
    }
  }
  const int fd = ::shm_open(g_name.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) std::abort();
  if (::write(fd, seg.data(), seg.size()) != static_cast<ssize_t>(seg.size())) std::abort();
  ::close(fd);
  try {
    xshm::OpenOptions o;
    o.readonly = true;
    o.stall_timeout = std::chrono::milliseconds(1);
    auto m = xshm::SharedMemoryManager::open(g_name, o);
    xshm::Snapshot s = m.read();
    (void)m.wait_for(s.seq, std::chrono::nanoseconds(0));
  } catch (const xshm::LayoutError&) {
  } catch (const xshm::TornRecordError&) {
  }
  ::shm_unlink(g_name.c_str());
  return 0;
}
