#include "moe/softmax_top_k.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "moe/fused_ops.h"

namespace moe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows [lo, hi): probabilities, log-sum-exp, top-k ids and weights.
void forward_rows(const float* logits, float* probs, float* lse, int64_t* ids, float* weights, int64_t E, int64_t K,
                  bool renormalize, int64_t lo, int64_t hi) {
    std::vector<char> taken(static_cast<size_t>(E));
    for (int64_t t = lo; t < hi; ++t) {
        const float* l = logits + t * E;
        float* p = probs + t * E;
        float m = l[0];
        for (int64_t j = 1; j < E; ++j) m = l[j] > m ? l[j] : m;
        float s = 0;
        for (int64_t j = 0; j < E; ++j) s += (p[j] = std::exp(l[j] - m));
        const float inv = 1.0f / s;
        for (int64_t j = 0; j < E; ++j) p[j] *= inv;
        lse[t] = m + std::log(s);
        // K passes of an arg-max over the experts not yet taken: K and E are small. A NaN is never
        // greater, so a row of NaNs still yields valid (if meaningless) ids.
        std::fill(taken.begin(), taken.end(), 0);
        float picked = 0;
        for (int64_t k = 0; k < K; ++k) {
            int64_t best = -1;
            for (int64_t j = 0; j < E; ++j)
                if (!taken[size_t(j)] && (best < 0 || p[j] > p[best])) best = j;
            taken[size_t(best)] = 1;
            ids[t * K + k] = best;
            weights[t * K + k] = p[best];
            picked += p[best];
        }
        if (renormalize)
            for (int64_t k = 0; k < K; ++k) weights[t * K + k] /= picked;
    }
}

// Rows [lo, hi): dL/dlogits from the gradients of probs (gp, may be null), weights (gw, may be
// null) and lse (glse, may be null). With renormalisation w_k = p_ik / S, S = sum_k p_ik:
// dL/dp_ik += (gw_k - sum_m gw_m w_m) / S. Then the softmax: dl_j = p_j (gp_j - <gp, p>), and the
// log-sum-exp adds glse p_j.
void backward_rows(const float* probs, const float* weights, const int64_t* ids, const float* gprobs,
                   const float* gweights, const float* glse, float* glogits, int64_t E, int64_t K, bool renormalize,
                   int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
        const float* p = probs + t * E;
        float* g = glogits + t * E;   // dL/dp first, then overwritten by dL/dlogits
        for (int64_t j = 0; j < E; ++j) g[j] = gprobs ? gprobs[t * E + j] : 0.0f;
        if (gweights) {
            const float* gw = gweights + t * K;
            const float* w = weights + t * K;
            const int64_t* id = ids + t * K;
            if (renormalize) {
                float S = 0, gw_dot_w = 0;
                for (int64_t k = 0; k < K; ++k) {
                    S += p[id[k]];
                    gw_dot_w += gw[k] * w[k];
                }
                for (int64_t k = 0; k < K; ++k) g[id[k]] += (gw[k] - gw_dot_w) / S;
            } else {
                for (int64_t k = 0; k < K; ++k) g[id[k]] += gw[k];
            }
        }
        float dot = 0;
        for (int64_t j = 0; j < E; ++j) dot += g[j] * p[j];
        const float gl = glse ? glse[t] : 0.0f;
        for (int64_t j = 0; j < E; ++j) g[j] = p[j] * (g[j] - dot + gl);
    }
}

const float* data_or_null(const torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

struct SoftmaxTopKFunction : public torch::autograd::Function<SoftmaxTopKFunction> {
    static variable_list forward(AutogradContext* ctx, const torch::Tensor& logits_in, int64_t K, bool renormalize) {
        auto logits = logits_in.contiguous();
        const int64_t T = logits.size(0), E = logits.size(1);
        auto probs = torch::empty({T, E}, logits.options());
        auto lse = torch::empty({T}, logits.options());
        auto weights = torch::empty({T, K}, logits.options());
        auto ids = torch::empty({T, K}, logits.options().dtype(torch::kInt64));
        const float* lp = logits.data_ptr<float>();
        float *pp = probs.data_ptr<float>(), *sp = lse.data_ptr<float>(), *wp = weights.data_ptr<float>();
        int64_t* ip = ids.data_ptr<int64_t>();
        at::parallel_for(0, T, 256, [&](int64_t lo, int64_t hi) {
            forward_rows(lp, pp, sp, ip, wp, E, K, renormalize, lo, hi);
        });
        ctx->mark_non_differentiable({ids});
        ctx->save_for_backward({probs, weights, ids});
        ctx->saved_data["renormalize"] = renormalize;
        return {probs, weights, ids, lse};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto saved = ctx->get_saved_variables();
        auto probs = saved[0], weights = saved[1], ids = saved[2];
        const int64_t T = probs.size(0), E = probs.size(1), K = weights.size(1);
        const bool renormalize = ctx->saved_data["renormalize"].toBool();
        const auto contiguous = [](const torch::Tensor& g) { return g.defined() ? g.contiguous() : g; };
        auto gprobs = contiguous(grads[0]), gweights = contiguous(grads[1]), glse = contiguous(grads[3]);
        auto glogits = torch::empty_like(probs);
        const float *pp = probs.data_ptr<float>(), *wp = weights.data_ptr<float>();
        const int64_t* ip = ids.data_ptr<int64_t>();
        const float *gp = data_or_null(gprobs), *gw = data_or_null(gweights), *gl = data_or_null(glse);
        float* out = glogits.data_ptr<float>();
        at::parallel_for(0, T, 256, [&](int64_t lo, int64_t hi) {
            backward_rows(pp, wp, ip, gp, gw, gl, out, E, K, renormalize, lo, hi);
        });
        return {glogits, torch::Tensor(), torch::Tensor()};
    }
};

}  // namespace

SoftmaxTopK softmax_top_k_reference(const torch::Tensor& logits_TE, int64_t k, bool renormalize) {
    SoftmaxTopK r;
    r.probs_TE = torch::softmax(logits_TE, 1);
    auto top = r.probs_TE.topk(k, 1);
    r.weights_TK = std::get<0>(top);
    r.ids_TK = std::get<1>(top);
    if (renormalize) r.weights_TK = r.weights_TK / r.weights_TK.sum(1, true);
    r.lse_T = torch::logsumexp(logits_TE, 1);
    return r;
}

SoftmaxTopK softmax_top_k(const torch::Tensor& logits_TE, int64_t k, bool renormalize) {
    MOE_CHECK(logits_TE.dim() == 2 && k >= 1 && k <= logits_TE.size(1), "softmax_top_k: top {} of logits [{}]", k,
              fmt::join(logits_TE.sizes(), ", "));
    if (!use_fused_cpu_kernels(logits_TE)) return softmax_top_k_reference(logits_TE, k, renormalize);
    auto out = SoftmaxTopKFunction::apply(logits_TE, k, renormalize);
    return SoftmaxTopK{out[0], out[1], out[2], out[3]};
}

}  // namespace moe
