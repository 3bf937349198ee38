#include "moe/weighted_combine.h"

#include <ATen/Parallel.h>

#include "common/dot_product.h"
#include "common/error.h"
#include "common/vector_clones.h"
#include "moe/fused_ops.h"

namespace moe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// out[t, lo:hi) += w[a] * rows[a, lo:hi) for every assignment a, in order of a. Columns split
// between threads, so no two threads add into the same element.
MOE_VECTOR_CLONES
void combine_columns(const float* __restrict rows, const float* __restrict w, const int64_t* __restrict ids,
                     float* __restrict out, int64_t A, int64_t D, int64_t lo, int64_t hi) {
    for (int64_t a = 0; a < A; ++a) {
        const float wa = w[a];
        const float* r = rows + a * D;
        float* o = out + ids[a] * D;
        for (int64_t i = lo; i < hi; ++i) o[i] += wa * r[i];
    }
}

// Over assignments [lo, hi): grows[a] = w[a] * g[t], gw[a] = <g[t], rows[a]> with t = ids[a].
MOE_VECTOR_CLONES
void combine_backward_rows(const float* __restrict g, const float* __restrict rows, const float* __restrict w,
                           const int64_t* __restrict ids, float* __restrict grows, float* __restrict gw, int64_t D,
                           int64_t lo, int64_t hi) {
    for (int64_t a = lo; a < hi; ++a) {
        const float* gt = g + ids[a] * D;
        const float* r = rows + a * D;
        float* gr = grows + a * D;
        const float wa = w[a];
        for (int64_t i = 0; i < D; ++i) gr[i] = wa * gt[i];
        gw[a] = dot_product(gt, r, D);
    }
}

struct WeightedCombine : public torch::autograd::Function<WeightedCombine> {
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& rows_in, const torch::Tensor& weights_in,
                                 const torch::Tensor& ids_in, int64_t num_tokens) {
        auto rows = rows_in.contiguous(), weights = weights_in.contiguous(), ids = ids_in.contiguous();
        const int64_t A = rows.size(0), D = rows.size(1);
        auto out = torch::zeros({num_tokens, D}, rows.options());
        const float* rp = rows.data_ptr<float>();
        const float* wp = weights.data_ptr<float>();
        const int64_t* ip = ids.data_ptr<int64_t>();
        float* op = out.data_ptr<float>();
        at::parallel_for(0, D, 64, [&](int64_t lo, int64_t hi) { combine_columns(rp, wp, ip, op, A, D, lo, hi); });
        ctx->save_for_backward({rows, weights, ids});
        return out;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto saved = ctx->get_saved_variables();
        auto rows = saved[0], weights = saved[1], ids = saved[2];
        auto g = grads[0].contiguous();
        const int64_t A = rows.size(0), D = rows.size(1);
        auto grows = torch::empty_like(rows);
        auto gw = torch::empty_like(weights);
        const float* gp = g.data_ptr<float>();
        const float* rp = rows.data_ptr<float>();
        const float* wp = weights.data_ptr<float>();
        const int64_t* ip = ids.data_ptr<int64_t>();
        float* grp = grows.data_ptr<float>();
        float* gwp = gw.data_ptr<float>();
        at::parallel_for(0, A, 256, [&](int64_t lo, int64_t hi) {
            combine_backward_rows(gp, rp, wp, ip, grp, gwp, D, lo, hi);
        });
        return {grows, gw, torch::Tensor(), torch::Tensor()};
    }
};

}  // namespace

torch::Tensor weighted_combine_reference(const torch::Tensor& rows_AD, const torch::Tensor& weights_A,
                                         const torch::Tensor& token_ids_A, int64_t num_tokens) {
    auto weighted_AD = rows_AD * weights_A.unsqueeze(1);
    return torch::zeros({num_tokens, rows_AD.size(1)}, rows_AD.options()).index_add(0, token_ids_A, weighted_AD);
}

torch::Tensor weighted_combine(const torch::Tensor& rows_AD, const torch::Tensor& weights_A,
                               const torch::Tensor& token_ids_A, int64_t num_tokens) {
    const int64_t A = rows_AD.size(0);
    MOE_CHECK(rows_AD.dim() == 2 && weights_A.dim() == 1 && token_ids_A.dim() == 1 && weights_A.size(0) == A &&
                  token_ids_A.size(0) == A,
              "weighted_combine: rows [{}], weights [{}], token ids [{}]", fmt::join(rows_AD.sizes(), ", "),
              fmt::join(weights_A.sizes(), ", "), fmt::join(token_ids_A.sizes(), ", "));
    if (!use_fused_cpu_kernels(rows_AD) || weights_A.scalar_type() != torch::kFloat32 ||
        token_ids_A.scalar_type() != torch::kInt64)
        return weighted_combine_reference(rows_AD, weights_A, token_ids_A, num_tokens);
    // The kernel writes out[ids[a]] unchecked: a token id out of range would write outside it.
    if (A > 0) {
        auto [lo, hi] = torch::aminmax(token_ids_A);
        MOE_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < num_tokens,
                  "weighted_combine: token ids in [{}, {}] for {} tokens", lo.item<int64_t>(), hi.item<int64_t>(),
                  num_tokens);
    }
    return WeightedCombine::apply(rows_AD, weights_A, token_ids_A, num_tokens);
}

}  // namespace moe
