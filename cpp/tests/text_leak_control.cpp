// Negative control for the valgrind leak check: takes an owned string from the xshm-text C ABI
// and never frees it. ctest expects valgrind to FAIL on this program, which shows the leak
// check of text_abi_test.cpp can catch a missing xshm_text_free().
#include <cstdio>

#include "xshm_text.h"

int main() {
  char* out = nullptr;
  std::size_t len = 0;
  const unsigned char s[] = {'l', 'e', 'a', 'k'};
  if (xshm_text_decode_lossy(s, sizeof s, &out, &len) != XSHM_TEXT_STATUS_OK) return 2;
  std::printf("%zu bytes taken and not freed\n", len);
  out = nullptr;  // leaked on purpose
  return 0;
}
