// Whether a stream's reader or writer is still there, asked of the kernel rather than of pids
// (a pid is reused, and one in another PID namespace looks dead): every attached reader and
// writer holds an open-file-description (OFD) read lock on one byte of the segment file, the
// byte at its table entry's offset. The kernel drops the lock when the last descriptor of
// that open file description closes, which a process's death does. Anyone else asks with
// F_OFD_GETLK for a write lock on that byte: a conflict means alive. Locks held through the
// asker's own open file description never conflict with it, so a handle asks about its own
// entries from memory, not from the kernel.
//
// fork(): a child inherits the descriptors, hence the parent's locks would outlive the parent
// while the child lives. Every stream handle registers its descriptor here; in the child,
// the descriptors are closed (the locks stay the parent's alone) and the handles refuse use.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <mutex>
#include <set>

#include "errors.hpp"

namespace xshm::liveness {

/// Takes the read lock on byte `offset` without waiting. False when a write lock holds it
/// (never happens in a valid segment: nobody takes write locks) or the OS refuses.
inline bool hold(int fd, std::uint64_t offset) noexcept {
  struct flock fl {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = 1;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

inline void release(int fd, std::uint64_t offset) noexcept {
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = 1;
  (void)::fcntl(fd, F_OFD_SETLK, &fl);
}

/// True when another open file description holds a lock on byte `offset`; an error of the
/// query counts as held (never reap on a doubt).
inline bool held_by_other(int fd, std::uint64_t offset) noexcept {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return true;
  return fl.l_type != F_UNLCK;
}

/// A descriptor a stream handle holds, closed in the child after fork(). `fd` becomes -1
/// there; `forked` tells the handle it is the child's inherited copy.
struct Registered {
  int fd = -1;
  bool forked = false;
};

namespace impl {
// Never destroyed: a handle may go after static destruction began (a notifier thread lets go of
// the segment it slept on while the process exits, notifier.hpp).
inline std::mutex& registry_mutex() {
  static auto* m = new std::mutex();
  return *m;
}
inline std::set<Registered*>& registry() {
  static auto* r = new std::set<Registered*>();
  return *r;
}
inline void install_fork_handlers() {
  static const int once = pthread_atfork([] { registry_mutex().lock(); }, [] { registry_mutex().unlock(); },
                                         [] {
                                           // The child: the only thread; the mutex is held
                                           // by this thread since prepare.
                                           for (Registered* r : registry()) {
                                             if (r->fd >= 0) ::close(r->fd);
                                             r->fd = -1;
                                             r->forked = true;
                                           }
                                           registry_mutex().unlock();
                                         });
  (void)once;
}
}  // namespace impl

/// Opens `canon` for a handle's liveness locks and registers the descriptor in one step, under
/// the registry mutex that fork() takes first: a fork in another thread between the two would
/// give the child a copy of the descriptor that it never closes, and the handle's locks would
/// then outlive this process. -1 (errno set) on failure.
inline int open_registered(Registered* r, const char* canon, int flags) {
  impl::install_fork_handlers();
  std::lock_guard<std::mutex> g(impl::registry_mutex());
  const int fd = ::shm_open(canon, flags | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  r->fd = fd;
  impl::registry().insert(r);
  return fd;
}

/// Withdraws `r` and closes its descriptor (unless a fork closed it), under the registry mutex:
/// a fork in another thread between the withdrawal and the close would give the child a copy
/// that nobody closes, and this handle's locks would outlive it.
inline void close_registered(Registered* r) noexcept {
  std::lock_guard<std::mutex> g(impl::registry_mutex());
  impl::registry().erase(r);
  if (r->fd >= 0) ::close(r->fd);
  r->fd = -1;
}

}  // namespace xshm::liveness
