// Configuration of the optimiser and its learning-rate schedule (section `optim:`). Owned by lib/optim.
#pragma once

#include <cstdint>

namespace moe {

// adamw: the default. sgd: plain SGD with optional heavy-ball momentum, linear in the gradient,
// the inner optimizer for which local SGD with one-step windows equals synchronous SGD (the
// control that separates an outer loop from the inner optimizer).
enum class OptimizerKind { adamw, sgd };

struct OptimConfig {
    OptimizerKind name = OptimizerKind::adamw;
    double lr = 3e-3;             // peak learning rate
    double min_lr_ratio = 0.1;    // cosine decays to lr * min_lr_ratio
    int64_t warmup_steps = 20;    // linear warm-up
    double weight_decay = 0.1;    // decoupled (also for sgd); not applied to norms
    double beta1 = 0.9;
    double beta2 = 0.95;
    double momentum = 0.0;        // sgd only: buf = momentum * buf + grad
    double eps = 1e-8;
    double grad_clip = 1.0;       // global-norm clipping; 0 = off
};

}  // namespace moe
