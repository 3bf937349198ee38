// Dot products in 16 running sums. A float reduction written as one running sum does not
// vectorise without -ffast-math (the compiler may not reorder the additions), so the loop around
// it runs one float at a time; 16 independent sums are one AVX-512 register (two AVX2 ones), and
// their order is fixed in the source, so every vector width gives the same result.
#pragma once

#include <cstdint>

namespace moe {

// sum_i x[i] * y[i] (* z[i] when z is given).
inline float dot_product(const float* __restrict x, const float* __restrict y, int64_t n) {
    float acc[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * y[i + j];
    float s = 0;
    for (; i < n; ++i) s += x[i] * y[i];
    for (int j = 0; j < 16; ++j) s += acc[j];
    return s;
}

inline float dot_product(const float* __restrict x, const float* __restrict y, const float* __restrict z, int64_t n) {
    float acc[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * y[i + j] * z[i + j];
    float s = 0;
    for (; i < n; ++i) s += x[i] * y[i] * z[i];
    for (int j = 0; j < 16; ++j) s += acc[j];
    return s;
}

}  // namespace moe
