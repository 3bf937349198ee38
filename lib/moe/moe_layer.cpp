#include "moe/moe_layer.h"

#include "common/error.h"
#include "moe/aux_loss_injector.h"
#include "moe/fused_ops.h"
#include "moe/layers.h"
#include "moe/router.h"
#include "moe/weighted_combine.h"

namespace moe {

torch::Tensor run_local_experts(const torch::Tensor& rows_RD, const std::vector<int64_t>& num_tokens_per_local_expert,
                                const MoeWeights& w) {
    MOE_CHECK(static_cast<int64_t>(num_tokens_per_local_expert.size()) == w.w1.size(0),
              "experts: {} token counts for {} local experts", num_tokens_per_local_expert.size(), w.w1.size(0));
    if (use_fused_cpu_kernels(rows_RD)) return grouped_swiglu(rows_RD, num_tokens_per_local_expert, w.w1, w.w3, w.w2);
    // Plain-op path (CUDA, float64 reference tests, other dtypes).
    std::vector<torch::Tensor> outs;
    int64_t offset = 0;
    for (size_t e = 0; e < num_tokens_per_local_expert.size(); ++e) {
        const int64_t n = num_tokens_per_local_expert[e];
        if (n == 0) continue;  // an idle expert costs nothing and gets a zero gradient
        auto idx = static_cast<int64_t>(e);
        outs.push_back(swiglu(rows_RD.narrow(0, offset, n), w.w1[idx], w.w3[idx], w.w2[idx]));
        offset += n;
    }
    MOE_CHECK(offset == rows_RD.size(0), "experts: counts sum to {} but {} rows arrived", offset, rows_RD.size(0));
    // No rows here: still return a result computed from rows_RD, so the autograd graph stays
    // connected and an expert-parallel exchange before this point runs its backward on every
    // rank (a rank that skipped it would leave its peers waiting in the all-to-all).
    if (outs.empty()) return rows_RD.narrow(0, 0, 0).mul(0);
    return outs.size() == 1 ? outs[0] : torch::cat(outs, 0);
}

MoeLayerOutput moe_forward(const torch::Tensor& x_TD, const MoeWeights& w, const MoeConfig& cfg,
                           ExpertDispatcher& dispatcher, double aux_scale, double z_scale) {
    RouterDecision route = route_tokens(x_TD, w.gate, cfg, dispatcher);

    auto rows_SD = x_TD.index_select(0, route.token_ids_A);
    DispatchResult local = dispatcher.dispatch(rows_SD, route.num_tokens_per_expert);
    auto expert_out = run_local_experts(local.rows_RD, local.num_tokens_per_local_expert, w);
    auto out_SD = dispatcher.combine(expert_out, local);

    // Combined in the residual stream's dtype (expert outputs are bfloat16 under bf16 autocast on CUDA).
    const auto dtype = x_TD.scalar_type();
    auto out_TD = weighted_combine(out_SD.to(dtype), route.weights_A.to(dtype), route.token_ids_A, x_TD.size(0));
    if (w.shared_w1.defined()) out_TD = out_TD + swiglu(x_TD, w.shared_w1, w.shared_w3, w.shared_w2);

    MoeLayerOutput result;
    torch::Tensor aux_total;
    if (route.aux_loss.defined() && aux_scale != 0) aux_total = route.aux_loss * aux_scale;
    if (z_scale != 0) aux_total = aux_total.defined() ? aux_total + route.z_loss * z_scale : route.z_loss * z_scale;
    result.out_TD = aux_total.defined() ? attach_aux_loss(out_TD, aux_total) : out_TD;

    result.stats.routed_per_expert_E = route.routed_per_expert_E;
    result.stats.num_routed = route.num_routed;
    result.stats.num_dropped = route.num_dropped;
    result.stats.aux_loss = route.aux_loss.defined() ? route.aux_loss.item<double>() : 0.0;
    result.stats.z_loss = route.z_loss.item<double>();
    return result;
}

}  // namespace moe
