// MOE_VECTOR_CLONES before a hot elementwise loop function: GCC compiles it three times (AVX-512,
// AVX2 + FMA, and the baseline x86-64 the rest of the binary targets) and picks one when the
// program loads (an ifunc resolver reading CPUID). The build stays portable to any x86-64, and
// these loops still run at the CPU's full vector width instead of SSE2's four floats (on this
// project's Zen 4 machines: a training step 1.05x faster, docs/performance.md).
//
// A function must take plain pointers (no lambdas: clones apply to named functions). Results
// may differ in the last bits between CPUs (FMA contraction), as MKL's own kernels do; on one
// machine they are deterministic.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MOE_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MOE_VECTOR_CLONES
#endif
