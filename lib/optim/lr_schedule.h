// Linear warm-up to the peak learning rate, then cosine decay to lr * min_lr_ratio at the last
// step. A pure function of the step, so the schedule's checkpointed state is the step alone.
#pragma once

#include <cstdint>

#include "optim/optim_config.h"

namespace moe {

// Learning rate for 0-based `step` of a run of `total_steps`.
double learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps);

}  // namespace moe
