// How many threads a rank computes with. libtorch's at::set_num_threads sets its OpenMP pool,
// but Debian's libtorch calls OpenBLAS, whose own pthread pool (libopenblas0-pthread) keeps one
// busy-waiting thread per core regardless: a "1-thread" process then occupies 2 cores and two
// ranks on 2 cores oversubscribe them. So both pools are set.
#pragma once

#include <cstdint>

namespace moe {

// Sets libtorch's intra-op threads and, when the process uses OpenBLAS, OpenBLAS's threads.
void set_compute_threads(int64_t threads);

}  // namespace moe
