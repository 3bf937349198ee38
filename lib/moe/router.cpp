#include "moe/router.h"

#include <cmath>

#include "common/error.h"
#include "moe/precision.h"
#include "moe/softmax_top_k.h"

namespace moe {

int64_t expert_capacity(const MoeConfig& cfg, int64_t num_tokens) {
    double cf = cfg.capacity_factor;
    if (cfg.routing == Routing::expert_choice && cf <= 0) cf = 1.0;
    if (cf <= 0) return 0;
    return static_cast<int64_t>(std::ceil(cf * double(num_tokens) * double(cfg.top_k) / double(cfg.num_experts)));
}

torch::Tensor load_balancing_loss(const torch::Tensor& probs_TE, const torch::Tensor& expert_ids_TK) {
    const int64_t T = probs_TE.size(0), E = probs_TE.size(1);
    auto f_E = torch::bincount(expert_ids_TK.reshape(-1), {}, E).to(probs_TE.scalar_type()) / double(T);
    auto P_E = probs_TE.mean(0);
    return (f_E * P_E).sum() * double(E);
}

torch::Tensor router_z_loss(const torch::Tensor& logits_TE) {
    return router_z_loss_from_lse(torch::logsumexp(logits_TE, 1));
}
torch::Tensor router_z_loss_from_lse(const torch::Tensor& lse_T) { return lse_T.square().mean(); }

namespace {

// Global-scope load-balancing loss: f and P are summed over the group before the product, so the
// loss equals the single-process loss over the group's whole batch.
torch::Tensor global_load_balancing_loss(const torch::Tensor& probs_TE, const torch::Tensor& expert_ids_TK,
                                         ExpertDispatcher& group) {
    const int64_t E = probs_TE.size(1);
    auto counts_E = torch::bincount(expert_ids_TK.reshape(-1), {}, E).to(probs_TE.scalar_type());
    auto tokens = torch::full({1}, double(probs_TE.size(0)), probs_TE.options());
    auto counts_and_tokens = group.all_reduce_sum(torch::cat({counts_E, tokens})).detach();
    double T_total = counts_and_tokens[E].item<double>();
    auto f_E = counts_and_tokens.narrow(0, 0, E) / T_total;
    auto P_E = group.all_reduce_sum(probs_TE.sum(0)) / T_total;
    return (f_E * P_E).sum() * double(E);
}

// Keeps assignments in priority order (k-major: all first choices, then second choices; tokens
// in order) until each expert holds `capacity`; returns the kept flat indices sorted by expert.
torch::Tensor keep_within_capacity(const torch::Tensor& ids_A, int64_t num_experts, int64_t capacity) {
    auto sorted = torch::sort(ids_A, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    auto sorted_ids = std::get<0>(sorted);
    auto order = std::get<1>(sorted);
    if (capacity <= 0) return order;
    auto counts_E = torch::bincount(ids_A, {}, num_experts);
    auto starts_E = counts_E.cumsum(0) - counts_E;
    auto rank_in_expert = torch::arange(ids_A.size(0), ids_A.options()) - starts_E.index_select(0, sorted_ids);
    return order.masked_select(rank_in_expert < capacity);
}

std::vector<int64_t> count_per_expert(const torch::Tensor& expert_ids_A, int64_t E) {
    auto counts = torch::bincount(expert_ids_A, {}, E).to(torch::kCPU).contiguous();
    return std::vector<int64_t>(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + E);
}

RouterDecision token_choice(const SoftmaxTopK& top, const MoeConfig& cfg, ExpertDispatcher& group) {
    const auto& probs_TE = top.probs_TE;
    const auto& weights_TK = top.weights_TK;
    const auto& ids_TK = top.ids_TK;
    const int64_t T = probs_TE.size(0), E = cfg.num_experts, K = cfg.top_k;

    RouterDecision d;
    d.aux_loss = cfg.aux_loss_scope == AuxLossScope::global ? global_load_balancing_loss(probs_TE, ids_TK, group)
                                                            : load_balancing_loss(probs_TE, ids_TK);
    // Flat assignment a = k * T + t, so ascending a is the drop priority.
    auto ids_A = ids_TK.t().reshape(-1);
    auto kept_A = keep_within_capacity(ids_A, E, expert_capacity(cfg, T));
    d.expert_ids_A = ids_A.index_select(0, kept_A);
    d.token_ids_A = kept_A.remainder(T);
    d.weights_A = weights_TK.t().reshape(-1).index_select(0, kept_A);
    d.num_tokens_per_expert = count_per_expert(d.expert_ids_A, E);
    d.routed_per_expert_E = torch::bincount(ids_A, {}, E);
    d.num_routed = T * K;
    d.num_dropped = d.num_routed - kept_A.size(0);
    return d;
}

RouterDecision expert_choice(const torch::Tensor& probs_TE, const MoeConfig& cfg) {
    const int64_t T = probs_TE.size(0), E = cfg.num_experts;
    const int64_t C = std::min<int64_t>(expert_capacity(cfg, T), T);
    auto top = probs_TE.t().topk(C, 1);  // each expert's C best tokens
    RouterDecision d;
    d.weights_A = std::get<0>(top).reshape(-1);
    d.token_ids_A = std::get<1>(top).reshape(-1);
    d.expert_ids_A = torch::arange(E, d.token_ids_A.options()).repeat_interleave(C);
    d.num_tokens_per_expert.assign(E, C);
    d.routed_per_expert_E = torch::full({E}, C, d.token_ids_A.options());
    d.num_routed = E * C;
    d.num_dropped = 0;
    return d;
}

}  // namespace

RouterDecision route_tokens(const torch::Tensor& x_TD, const torch::Tensor& gate_ED, const MoeConfig& cfg,
                            ExpertDispatcher& stats_group) {
    MOE_CHECK(x_TD.dim() == 2 && gate_ED.size(1) == x_TD.size(1), "router: x [{}] vs gate [{}]", fmt::join(x_TD.sizes(), ", "),
              fmt::join(gate_ED.sizes(), ", "));
    // Routing decisions in at least float32 whatever the activation dtype (Mixtral's behaviour),
    // also under bf16 autocast.
    AutocastScope fp32(x_TD.device().type(), Precision::fp32);
    const auto dtype = x_TD.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    auto logits_TE = torch::mm(x_TD.to(dtype), gate_ED.to(dtype).t());
    if (cfg.routing == Routing::expert_choice) {
        RouterDecision d = expert_choice(torch::softmax(logits_TE, 1), cfg);
        d.z_loss = router_z_loss(logits_TE);
        return d;
    }
    const SoftmaxTopK top = softmax_top_k(logits_TE, cfg.top_k, cfg.renormalize);
    RouterDecision d = token_choice(top, cfg, stats_group);
    d.z_loss = router_z_loss_from_lse(top.lse_T);
    return d;
}

}  // namespace moe
