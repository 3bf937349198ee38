// Portable random numbers for data generation and shuffling: splitmix64 (seeding and
// counter-based streams) and xoshiro256** (bulk draws), with our own uniform, exponential and
// gamma samplers. std:: distributions are implementation-defined, so data would differ between
// standard libraries; these give the same tokens everywhere.
#pragma once

#include <cmath>
#include <cstdint>

namespace moe {

inline uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A stream keyed by several integers (seed, stream id, index): any sample is O(1) to reach.
inline uint64_t mix_keys(uint64_t a, uint64_t b, uint64_t c = 0) {
    uint64_t s = a;
    uint64_t h = splitmix64(s);
    s = h ^ b;
    h = splitmix64(s);
    s = h ^ c;
    return splitmix64(s);
}

class Rng {
   public:
    explicit Rng(uint64_t seed) {
        for (auto& w : s_) w = splitmix64(seed);
    }
    uint64_t next() {  // xoshiro256**
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }
    // Uniform integer in [0, n) (Lemire's multiply; the bias for n << 2^64 is negligible).
    uint64_t below(uint64_t n) { return uint64_t((__uint128_t(next()) * n) >> 64); }
    double exponential() { return -std::log1p(-uniform()); }
    // Gamma(shape, 1): Marsaglia-Tsang, with the shape < 1 boost.
    double gamma(double shape) {
        if (shape < 1.0) return gamma(shape + 1.0) * std::pow(uniform() + 1e-300, 1.0 / shape);
        const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
        for (;;) {
            double x, v;
            do {
                x = normal();
                v = 1.0 + c * x;
            } while (v <= 0);
            v = v * v * v;
            const double u = uniform();
            if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
            if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
        }
    }
    double normal() {  // Box-Muller
        const double u1 = uniform() + 1e-300, u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
    }

   private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

}  // namespace moe
