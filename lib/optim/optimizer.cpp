#include "optim/optimizer.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "common/vector_clones.h"
#include "moe/fused_ops.h"

namespace moe {

namespace {
// The hand-written loops below read raw CPU pointers.
bool use_cpu_loop(const ParameterStore& params) { return params.device().is_cpu() && fused_cpu_kernels_enabled(); }

// Decoupled weight decay, p *= factor, on the runs of parameters that take it (ATen path).
template <typename Segments>
void decay_segments(torch::Tensor& p, const Segments& segments, double factor) {
    if (factor == 1.0) return;
    for (const auto& s : segments)
        if (s.decay) p.narrow(0, s.begin, s.end - s.begin).mul_(factor);
}
struct AdamWCoefficients {
    float beta1, beta2, eps, decay, step_size, inv_sqrt_bc2;
};

// One pass per element over [lo, hi): decay, moments, update (the fused form of torch.optim.AdamW).
MOE_VECTOR_CLONES
void adamw_range(float* __restrict p, const float* __restrict grad, float* __restrict m, float* __restrict v,
                 int64_t lo, int64_t hi, AdamWCoefficients c) {
    for (int64_t i = lo; i < hi; ++i) {
        const float gi = grad[i];
        const float mi = c.beta1 * m[i] + (1.0f - c.beta1) * gi;
        const float vi = c.beta2 * v[i] + (1.0f - c.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * c.decay - c.step_size * mi / (std::sqrt(vi) * c.inv_sqrt_bc2 + c.eps);
    }
}

}  // namespace

Optimizer::Optimizer(ParameterStore& params, const OptimConfig& cfg) : params_(params), cfg_(cfg) {
    for (int g = 0; g < 2; ++g) {
        const auto on = torch::TensorOptions(params.device());
        exp_avg_[g] = torch::zeros({params.numel(static_cast<ParamGroup>(g))}, on);
        exp_avg_sq_[g] = torch::zeros({params.numel(static_cast<ParamGroup>(g))}, on);
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
    const bool loop = use_cpu_loop(params_);
    if (cfg_.name == OptimizerKind::sgd) loop ? sgd_step(lr) : sgd_step_aten(lr);
    else loop ? adamw_step(lr) : adamw_step_aten(lr);
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
        // Four distinct buffers (adamw_range's __restrict, which lets the compiler vectorise it).
        float* __restrict p = params_.values(static_cast<ParamGroup>(g)).data_ptr<float>();
        const float* __restrict grad = params_.grads(static_cast<ParamGroup>(g)).data_ptr<float>();
        float* __restrict m = exp_avg_[g].data_ptr<float>();
        float* __restrict v = exp_avg_sq_[g].data_ptr<float>();
        for (const Segment& s : segments_[g]) {
            const float decay = s.decay ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
            // One pass per element: decay, moments, update (the fused form of torch.optim.AdamW).
            at::parallel_for(s.begin, s.end, 16384, [&](int64_t lo, int64_t hi) {
                adamw_range(p, grad, m, v, lo, hi, {beta1, beta2, eps, decay, step_size, inv_sqrt_bc2});
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

void Optimizer::adamw_step_aten(double lr) {
    const double bc1 = 1.0 - std::pow(cfg_.beta1, double(step_count_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, double(step_count_));
    torch::NoGradGuard no_grad;
    for (int g = 0; g < 2; ++g) {
        if (params_.numel(static_cast<ParamGroup>(g)) == 0) continue;
        torch::Tensor& p = params_.values(static_cast<ParamGroup>(g));
        const torch::Tensor& grad = params_.grads(static_cast<ParamGroup>(g));
        torch::Tensor& m = exp_avg_[g];
        torch::Tensor& v = exp_avg_sq_[g];
        m.mul_(cfg_.beta1).add_(grad, 1.0 - cfg_.beta1);
        v.mul_(cfg_.beta2).addcmul_(grad, grad, 1.0 - cfg_.beta2);
        decay_segments(p, segments_[g], 1.0 - lr * cfg_.weight_decay);
        auto denom = v.sqrt().mul_(1.0 / std::sqrt(bc2)).add_(cfg_.eps);
        p.addcdiv_(m, denom, -lr / bc1);
    }
}

void Optimizer::sgd_step_aten(double lr) {
    torch::NoGradGuard no_grad;
    for (int g = 0; g < 2; ++g) {
        if (params_.numel(static_cast<ParamGroup>(g)) == 0) continue;
        torch::Tensor& p = params_.values(static_cast<ParamGroup>(g));
        const torch::Tensor& grad = params_.grads(static_cast<ParamGroup>(g));
        torch::Tensor& m = exp_avg_[g];
        decay_segments(p, segments_[g], 1.0 - lr * cfg_.weight_decay);
        if (cfg_.momentum > 0) {
            m.mul_(cfg_.momentum).add_(grad);
            p.add_(m, -lr);
        } else {
            p.add_(grad, -lr);
        }
    }
}

}  // namespace moe
