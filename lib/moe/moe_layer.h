// One sparse MoE feed-forward block (Mixtral's block_sparse_moe), forward steps:
//   1. router: logits -> float32 softmax -> top-K (or expert choice) -> capacity   (router.h)
//   2. permute: gather the routed rows, sorted by global expert
//   3. dispatch: hand the rows to the ranks that own their experts           (ExpertDispatcher)
//   4. experts: batched SwiGLU per local expert over contiguous row segments
//   5. combine: rows back from the experts' ranks                             (ExpertDispatcher)
//   6. un-permute: weight each row and add it into its token (weighted_combine.h); dropped tokens get 0
//   7. aux and z losses are attached to the output for the backward pass (aux_loss_injector.h)
// plus an optional always-on shared expert.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "moe/expert_dispatcher.h"
#include "moe/model_config.h"

namespace moe {

struct MoeWeights {
    torch::Tensor gate;        // [E, D] router
    torch::Tensor w1;          // [E_local, F, D]
    torch::Tensor w3;          // [E_local, F, D]
    torch::Tensor w2;          // [E_local, D, F]
    torch::Tensor shared_w1;   // [F_shared, D] or undefined
    torch::Tensor shared_w3;   // [F_shared, D]
    torch::Tensor shared_w2;   // [D, F_shared]
};

// What one MoE layer measured in its last forward (detached, for metrics and moe-eval).
struct MoeLayerStats {
    torch::Tensor routed_per_expert_E;  // int64 assignments per expert before dropping
    int64_t num_routed = 0;
    int64_t num_dropped = 0;
    double aux_loss = 0.0;
    double z_loss = 0.0;
};

struct MoeLayerOutput {
    torch::Tensor out_TD;      // MoE output with the scaled aux/z losses attached for backward
    MoeLayerStats stats;
};

// x_TD: normalised hidden states of T tokens. aux_scale / z_scale multiply the layer's losses.
MoeLayerOutput moe_forward(const torch::Tensor& x_TD, const MoeWeights& w, const MoeConfig& cfg,
                           ExpertDispatcher& dispatcher, double aux_scale, double z_scale);

// Step 4 alone: rows grouped by local expert, counts per local expert.
torch::Tensor run_local_experts(const torch::Tensor& rows_RD, const std::vector<int64_t>& num_tokens_per_local_expert,
                                const MoeWeights& w);

}  // namespace moe
