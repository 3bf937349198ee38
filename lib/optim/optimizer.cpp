#include "optim/optimizer.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace moe {

Optimizer::Optimizer(ParameterStore& params, const OptimConfig& cfg) : params_(params), cfg_(cfg) {
    for (int g = 0; g < 2; ++g) {
        exp_avg_[g] = torch::zeros({params.numel(static_cast<ParamGroup>(g))});
        exp_avg_sq_[g] = torch::zeros({params.numel(static_cast<ParamGroup>(g))});
    }
    for (const auto& e : params.entries()) {
        auto& segs = segments_[static_cast<int>(e.group)];
        const int64_t begin = e.offset, end = e.offset + e.value.numel();
        if (!segs.empty() && segs.back().decay == e.weight_decay && segs.back().end == begin) segs.back().end = end;
        else segs.push_back({begin, end, e.weight_decay});
    }
}

void Optimizer::step(double lr) {
    ++step_count_;
    if (cfg_.name == OptimizerKind::sgd) sgd_step(lr);
    else adamw_step(lr);
}

void Optimizer::adamw_step(double lr) {
    const float beta1 = float(cfg_.beta1), beta2 = float(cfg_.beta2), eps = float(cfg_.eps);
    const double bc1 = 1.0 - std::pow(cfg_.beta1, double(step_count_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, double(step_count_));
    const float step_size = float(lr / bc1);
    const float inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
    torch::NoGradGuard no_grad;
    for (int g = 0; g < 2; ++g) {
        if (params_.numel(static_cast<ParamGroup>(g)) == 0) continue;
        // Four distinct buffers: __restrict lets the compiler vectorise the loop below.
        float* __restrict p = params_.values(static_cast<ParamGroup>(g)).data_ptr<float>();
        const float* __restrict grad = params_.grads(static_cast<ParamGroup>(g)).data_ptr<float>();
        float* __restrict m = exp_avg_[g].data_ptr<float>();
        float* __restrict v = exp_avg_sq_[g].data_ptr<float>();
        for (const Segment& s : segments_[g]) {
            const float decay = s.decay ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
            // One pass per element: decay, moments, update (the fused form of torch.optim.AdamW).
            at::parallel_for(s.begin, s.end, 16384, [&](int64_t lo, int64_t hi) {
                for (int64_t i = lo; i < hi; ++i) {
                    const float gi = grad[i];
                    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
                    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
                    m[i] = mi;
                    v[i] = vi;
                    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
                }
            });
        }
    }
}

void Optimizer::sgd_step(double lr) {
    const float mu = float(cfg_.momentum), step_size = float(lr);
    const bool heavy_ball = cfg_.momentum > 0;
    torch::NoGradGuard no_grad;
    for (int g = 0; g < 2; ++g) {
        if (params_.numel(static_cast<ParamGroup>(g)) == 0) continue;
        float* __restrict p = params_.values(static_cast<ParamGroup>(g)).data_ptr<float>();
        const float* __restrict grad = params_.grads(static_cast<ParamGroup>(g)).data_ptr<float>();
        float* __restrict m = exp_avg_[g].data_ptr<float>();
        for (const Segment& s : segments_[g]) {
            const float decay = s.decay ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
            at::parallel_for(s.begin, s.end, 16384, [&](int64_t lo, int64_t hi) {
                for (int64_t i = lo; i < hi; ++i) {
                    const float d = heavy_ball ? (m[i] = mu * m[i] + grad[i]) : grad[i];
                    p[i] = p[i] * decay - step_size * d;
                }
            });
        }
    }
}

}  // namespace moe
