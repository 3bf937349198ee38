// How a rank computes: its threads, and an allocator that keeps freed memory (keep_freed_memory).
// Threads: libtorch 2.11's wheel computes with OpenMP (its own libgomp) and MKL linked into
// libtorch_cpu; at::set_num_threads sets both pools (and oneDNN, which runs on OpenMP). Ranks that
// share a machine must not oversubscribe its cores, so every rank pins its pools before the first
// tensor op.
#pragma once

#include <cstdint>

namespace moe {

// Sets libtorch's intra-op threads (OpenMP and MKL). Throws Error if libtorch reports another count.
void set_compute_threads(int64_t threads);

// Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel after
// every step (see the .cpp). Throws Error if mallopt refuses.
void keep_freed_memory();

}  // namespace moe
