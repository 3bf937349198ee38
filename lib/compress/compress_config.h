// Configuration of SVD swarm-consensus gradient compression (section `compress:`).
// Owned by lib/compress. See DESIGN.md section 6.
#pragma once

#include <cstdint>

namespace moe {

struct CompressConfig {
    bool enabled = false;
    int64_t rank = 4;              // starting rank r
    int64_t min_rank = 1;          // rank consensus keeps r in [min_rank, max_rank]
    int64_t max_rank = 32;
    double energy_low = 0.80;      // grow r when the mean captured energy falls below this
    double energy_high = 0.95;     // shrink r when it rises above this
    int64_t refresh_every = 100;   // exact SVD refresh of Q every N compressed steps; 0 = never
    int64_t start_step = 0;        // plain all-reduce before this step (LR warm-up)
    double min_ratio = 2.0;        // compress only where (n + m) r < n m / min_ratio
    uint64_t seed = 17;            // shared seed for the initial Q
};

}  // namespace moe
