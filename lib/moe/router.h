// The router of one MoE layer: scores every token against every expert and decides which
// (token, expert) assignments are kept, with their combine weights and the auxiliary losses.
//
// Letters: T tokens, D model width, E experts (global), K experts per token, A kept assignments.
// Token choice (Mixtral): softmax over all E in float32, top-K, optional renormalisation of the K
// weights; with capacity_factor > 0 each expert keeps at most ceil(cf * T * K / E) assignments,
// first choices before second choices, earlier tokens first (GShard priority); the rest are
// dropped and their tokens ride the residual. Expert choice: each expert takes its top
// ceil(cf * T * K / E) tokens (cf 0 counts as 1); this looks across the sequence, so it is not
// causal at inference.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "moe/expert_dispatcher.h"
#include "moe/model_config.h"

namespace moe {

struct RouterDecision {
    torch::Tensor expert_ids_A;   // [A] int64, sorted ascending (stable in priority order)
    torch::Tensor token_ids_A;    // [A] int64 token row of each kept assignment
    torch::Tensor weights_A;      // [A] float32 combine weights (differentiable)
    std::vector<int64_t> num_tokens_per_expert;  // [E] kept assignments per expert
    torch::Tensor routed_per_expert_E;  // [E] int64 assignments before dropping (load metrics)
    int64_t num_dropped = 0;      // assignments dropped by capacity
    int64_t num_routed = 0;       // assignments before dropping (T * K for token choice)
    torch::Tensor aux_loss;       // Switch load-balancing loss (undefined for expert choice)
    torch::Tensor z_loss;         // ST-MoE router z-loss
};

// x_TD: normalised hidden states; gate_ED: router weight. `stats_group` reduces router
// statistics when cfg.aux_loss_scope == global.
RouterDecision route_tokens(const torch::Tensor& x_TD, const torch::Tensor& gate_ED, const MoeConfig& cfg,
                            ExpertDispatcher& stats_group);

// Capacity of one expert for T tokens (0 = unlimited).
int64_t expert_capacity(const MoeConfig& cfg, int64_t num_tokens);

// Switch Transformer load-balancing loss in Hugging Face Mixtral's normalisation:
// E * sum_e f_e * P_e, where f_e = (tokens with e among their top K) / T (so sum_e f_e = K) and
// P_e = mean router probability of e. Uniform routing gives K.
torch::Tensor load_balancing_loss(const torch::Tensor& probs_TE, const torch::Tensor& expert_ids_TK);

// ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2.
torch::Tensor router_z_loss(const torch::Tensor& logits_TE);
// The same from the per-token logsumexp lse_T [T], where it is already at hand (softmax_top_k).
torch::Tensor router_z_loss_from_lse(const torch::Tensor& lse_T);

}  // namespace moe
