// The inner optimizer, stepping the flat parameter buffers of a ParameterStore in one vectorised
// loop per buffer: AdamW with decoupled weight decay (Loshchilov & Hutter; the default) or SGD
// with optional momentum and the same decoupled decay (optim.name). Norm weights get no decay.
// State per group: exp_avg and exp_avg_sq (flat, same layout as the parameters) and the step
// count. SGD keeps its momentum buffer in exp_avg and leaves exp_avg_sq at zero, so checkpoints
// have one layout for both. On the CPU each update is one hand-vectorised loop; elsewhere (CUDA),
// or with moe::set_fused_cpu_kernels(false), the same arithmetic runs as ATen ops.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "moe/parameter_store.h"
#include "optim/optim_config.h"

namespace moe {

class Optimizer {
   public:
    Optimizer(ParameterStore& params, const OptimConfig& cfg);

    // One update with learning rate `lr` from the gradients currently in the store.
    void step(double lr);

    int64_t step_count() const { return step_count_; }
    void set_step_count(int64_t n) { step_count_ = n; }
    torch::Tensor& exp_avg(ParamGroup g) { return exp_avg_[static_cast<int>(g)]; }
    torch::Tensor& exp_avg_sq(ParamGroup g) { return exp_avg_sq_[static_cast<int>(g)]; }

   private:
    void adamw_step(double lr);
    void sgd_step(double lr);
    // The same updates as ATen ops, for any device.
    void adamw_step_aten(double lr);
    void sgd_step_aten(double lr);

    struct Segment {
        int64_t begin, end;
        bool decay;
    };
    ParameterStore& params_;
    OptimConfig cfg_;
    int64_t step_count_ = 0;
    torch::Tensor exp_avg_[2];
    torch::Tensor exp_avg_sq_[2];
    std::vector<Segment> segments_[2];  // maximal runs with the same decay flag
};

}  // namespace moe
