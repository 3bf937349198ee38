// Configuration of the optimiser and its learning-rate schedule (section `optim:`). Owned by lib/optim.
#pragma once

#include <cstdint>

namespace moe {

struct OptimConfig {
    double lr = 3e-3;             // peak learning rate
    double min_lr_ratio = 0.1;    // cosine decays to lr * min_lr_ratio
    int64_t warmup_steps = 20;    // linear warm-up
    double weight_decay = 0.1;    // decoupled (AdamW); not applied to norms
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double grad_clip = 1.0;       // global-norm clipping; 0 = off
};

}  // namespace moe
