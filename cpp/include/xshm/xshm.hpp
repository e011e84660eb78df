// Umbrella include: everything a C++ program needs to create, open, write, read and wait on
// an xshm segment. Header-only; links only the system libraries (pthread, rt on old glibc).
#pragma once

#include "clock.hpp"
#include "cpu.hpp"
#include "errors.hpp"
#include "futex.hpp"
#include "layout.hpp"
#include "manager.hpp"
#include "process.hpp"
#include "reader.hpp"
#include "record.hpp"
#include "robust_mutex.hpp"
#include "segment.hpp"
#include "seqlock.hpp"
#include "stream/layout.hpp"
#include "stream/stream.hpp"
#include "transaction.hpp"
#include "typed.hpp"
#include "utf8.hpp"
#include "wait.hpp"
#include "writer.hpp"
