// Configuration of the process layout (section `parallel:`) and of time-dilated async SGD
// (section `async:`). Owned by lib/parallel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/pipeline_schedule.h"

namespace moe {

struct ParallelConfig {
    int64_t pp = 1;  // pipeline stages
    int64_t dp = 1;  // data-parallel replicas
    int64_t ep = 1;  // expert-parallel degree inside a data group (dp % ep == 0)
    ScheduleKind schedule = ScheduleKind::one_f_one_b;
    std::vector<int64_t> partition;  // layers per stage; empty = even split
    double bucket_mb = 25.0;         // gradient all-reduce bucket size
    bool overlap_grad_sync = true;   // start bucket all-reduces during backward
};

struct AsyncConfig {
    bool enabled = false;
    double window_seconds = 10.0;  // T: wall-clock length of one inner window
    int64_t window_steps = 0;      // > 0: windows of this many inner steps instead (lock-step DiLoCo;
                                   // deterministic, so runs repeat bit for bit)
    // Outer Nesterov SGD. The defaults (lr 1, no momentum: token-weighted averaging, and no
    // staleness discount) are what bench/async.sh measured best for windows of ~10 inner steps:
    // DiLoCo's lr 0.7 / momentum 0.9 (tuned for 500-step windows) ended 6-7% worse, and
    // alpha 0.5 / 1 discarded progress made while a merge was in flight (docs/async.md).
    double outer_lr = 1.0;
    double outer_momentum = 0.0;
    double staleness_alpha = 0.0;  // gamma(tau) = 1 / (1 + tau)^alpha
    bool blocking = false;         // wait for each reduction (tests: equals synchronous DP)
};

}  // namespace moe
