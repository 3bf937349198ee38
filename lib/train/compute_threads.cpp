#include "train/compute_threads.h"

#include <fmt/format.h>
#include <malloc.h>
#include <torch/torch.h>

#include "common/error.h"

namespace moe {

void set_compute_threads(int64_t threads) {
    at::set_num_threads(int(threads));
    // Checked: a libtorch built with another threading backend could ignore the request silently.
    if (at::get_num_threads() != threads) {
        throw Error(fmt::format("libtorch runs {} intra-op threads after asking for {}", at::get_num_threads(), threads));
    }
}

void keep_freed_memory() {
    // A training step allocates and frees the same large activation buffers every step. With
    // glibc's defaults, blocks above the (adaptive, <= 32 MiB) mmap threshold are unmapped on free
    // and the heap top is trimmed, so the next step takes fresh pages from the kernel, which
    // zeroes each one (clear_page: ~3% of a tiny.yaml step in perf). Keep freed memory instead:
    // the process holds its peak step footprint, which it needs again at the next step anyway.
    // 32 MiB is the largest mmap threshold glibc accepts on 64-bit; larger blocks stay mmapped.
    constexpr int kMmapThreshold = 32 << 20, kTrimThreshold = 1 << 30;
    if (mallopt(M_MMAP_THRESHOLD, kMmapThreshold) != 1 || mallopt(M_TRIM_THRESHOLD, kTrimThreshold) != 1) {
        throw Error("mallopt refused the allocator settings (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)");
    }
}

}  // namespace moe
