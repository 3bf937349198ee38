// Named points where a crash test can make the process die as kill -9 would, deterministically:
// with MOE_CRASH_AT=<name> in the environment, crash_point("<name>") raises SIGKILL. Random kills
// (tests/cli/crash_test.sh) rarely land inside a short window such as pruning; these do.
//
//   crash_point("prune:after-rename");   // no-op unless MOE_CRASH_AT=prune:after-rename
#pragma once

#include <csignal>
#include <cstdlib>
#include <cstring>

namespace moe {

inline void crash_point(const char* name) {
    static const char* const wanted = std::getenv("MOE_CRASH_AT");
    if (wanted && std::strcmp(wanted, name) == 0) std::raise(SIGKILL);
}

}  // namespace moe
