#include "moe/fused_ops.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/graph_task.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/dot_product.h"
#include "common/error.h"
#include "common/vector_clones.h"
#include "moe/precision.h"

namespace moe {

namespace {

bool g_fused_cpu_kernels = true;

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// exp(x) for float32 in plain arithmetic that GCC vectorises (libm's expf is a scalar call):
// x = k ln2 + r with |r| <= ln2/2, exp(r) by its degree-6 Taylor polynomial (relative error
// below 2e-7 on that interval), times 2^k assembled in the exponent bits.
inline float vec_exp(float x) {
    x = x > 88.0f ? 88.0f : x;  // branch-free clamps (std::min/max block vectorisation here)
    x = x < -87.0f ? -87.0f : x;
    // Round to nearest by adding and subtracting 1.5 * 2^23 (SSE2 has no vector round).
    const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;  // ln2 split hi + lo
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + vec_exp(-x)); }

// h = silu(a) * b over n contiguous floats (restrict: the buffers never overlap, which lets GCC
// vectorise; kept as plain functions because it does not vectorise inside the lambdas).
MOE_VECTOR_CLONES
void swiglu_forward_range(const float* __restrict a, const float* __restrict b, float* __restrict h, int64_t n) {
    for (int64_t i = 0; i < n; ++i) h[i] = a[i] * sigmoid(a[i]) * b[i];
}

// From gh = dL/dh: ga = gh * b * silu'(a), gb = gh * silu(a); also recomputes h for dL/dw2.
MOE_VECTOR_CLONES
void swiglu_backward_range(const float* __restrict a, const float* __restrict b, const float* __restrict gh,
                           float* __restrict ga, float* __restrict gb, float* __restrict h, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float s = sigmoid(a[i]);
        const float silu = a[i] * s;
        h[i] = silu * b[i];
        gb[i] = gh[i] * silu;
        ga[i] = gh[i] * b[i] * (s + silu * (1.0f - s));
    }
}

void swiglu_forward_kernel(const float* a, const float* b, float* h, int64_t n) {
    at::parallel_for(0, n, 32768, [=](int64_t lo, int64_t hi) { swiglu_forward_range(a + lo, b + lo, h + lo, hi - lo); });
}

void swiglu_backward_kernel(const float* a, const float* b, const float* gh, float* ga, float* gb, float* h,
                            int64_t n) {
    at::parallel_for(0, n, 32768, [=](int64_t lo, int64_t hi) {
        swiglu_backward_range(a + lo, b + lo, gh + lo, ga + lo, gb + lo, h + lo, hi - lo);
    });
}

// out = a b, in the dtype of a and b (bfloat16 under bf16 autocast), stored into out's dtype.
void mm_into(torch::Tensor out, const torch::Tensor& a, const torch::Tensor& b) {
    if (a.scalar_type() == out.scalar_type()) at::mm_out(out, a, b);
    else out.copy_(at::mm(a, b));
}

// out += a b (a GEMM with beta = 1 in float32), or out = a b when not `accumulate`.
void mm_into(torch::Tensor out, const torch::Tensor& a, const torch::Tensor& b, bool accumulate) {
    if (!accumulate) mm_into(out, a, b);
    else if (a.scalar_type() == out.scalar_type()) out.addmm_(a, b);
    else out.add_(at::mm(a, b));
}

// The parameter's gradient buffer when backward may add w's gradient into it directly, else an
// undefined tensor. Why: returned, the expert weights' gradients cost a temporary as large as
// all of them and a pass of autograd's AccumulateGrad adding it to .grad; added by the GEMM that
// computes them (beta = 1) they cost neither. Only in a plain backward(): autograd::grad() and
// backward(inputs=...) run a graph task with exec_info set, and want the gradient returned. The
// weight's AccumulateGrad node still runs (it skips the undefined gradient it gets), so its
// post-hooks, which start the data-parallel all-reduce of a finished bucket, fire as before.
torch::Tensor grad_to_add_into(const torch::Tensor& w) {
    if (!w.is_leaf() || !w.requires_grad()) return {};
    const auto* exec_info = torch::autograd::get_current_graph_task_exec_info();
    if (exec_info == nullptr || !exec_info->empty()) return {};
    const torch::Tensor& g = w.grad();
    if (!g.defined() || g.requires_grad() || g.scalar_type() != torch::kFloat32 || g.device() != w.device() ||
        g.sizes() != w.sizes() || !g.is_contiguous())
        return {};
    return g;
}

// oneDNN, which runs the bfloat16 matmuls, compiles a kernel for every operand shape it meets,
// and each expert's row count changes every step: rounded up to a multiple of this, the shapes
// stay few (and cached). The padding rows are zeros and add nothing to any gradient.
constexpr int64_t kBf16RowBucket = 32;

struct GroupedSwiGLU : public torch::autograd::Function<GroupedSwiGLU> {
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& rows_RD, const torch::Tensor& counts_E,
                                 const torch::Tensor& w1, const torch::Tensor& w3, const torch::Tensor& w2) {
        const int64_t D = rows_RD.size(1), F = w1.size(1), E = w1.size(0);
        auto x = rows_RD.contiguous();
        // The matmuls' operands in their dtype (bfloat16 under bf16 autocast), cast once per call
        // rather than per expert; SwiGLU and the outputs stay float32.
        const auto mm_dtype = autocast_matmul_dtype(c10::kCPU);
        auto w1m = w1.to(mm_dtype), w3m = w3.to(mm_dtype), w2m = w2.to(mm_dtype);
        torch::Tensor xm = x, counts = counts_E, to_padded;   // to_padded: row r of x -> its padded row
        if (mm_dtype != torch::kFloat32) {
            const int64_t* c = counts_E.data_ptr<int64_t>();
            std::vector<int64_t> padded(static_cast<size_t>(E)), index;
            index.reserve(size_t(x.size(0)));
            int64_t at = 0;
            for (int64_t e = 0; e < E; ++e) {
                for (int64_t k = 0; k < c[e]; ++k) index.push_back(at + k);
                padded[size_t(e)] = (c[e] + kBf16RowBucket - 1) / kBf16RowBucket * kBf16RowBucket;
                at += padded[size_t(e)];
            }
            to_padded = torch::tensor(index, torch::kInt64);
            counts = torch::tensor(padded, torch::kInt64);
            xm = torch::zeros({at, D}, x.options().dtype(mm_dtype)).index_copy_(0, to_padded, x.to(mm_dtype));
        }
        const int64_t R = xm.size(0);
        auto a_RF = torch::empty({R, F}, x.options());
        auto b_RF = torch::empty({R, F}, x.options());
        auto h_RF = torch::empty({R, F}, x.options());
        auto out_RD = torch::empty({R, D}, x.options());
        const int64_t* n_e = counts.data_ptr<int64_t>();
        int64_t off = 0;
        for (int64_t e = 0; e < E; ++e) {
            const int64_t n = n_e[e];
            if (n == 0) continue;
            auto xe = xm.narrow(0, off, n);
            auto ae = a_RF.narrow(0, off, n), be = b_RF.narrow(0, off, n), he = h_RF.narrow(0, off, n);
            mm_into(ae, xe, w1m[e].t());
            mm_into(be, xe, w3m[e].t());
            swiglu_forward_kernel(ae.data_ptr<float>(), be.data_ptr<float>(), he.data_ptr<float>(), n * F);
            mm_into(out_RD.narrow(0, off, n), he.to(mm_dtype), w2m[e].t());
            off += n;
        }
        // w1, w3, w2 themselves as well (in float32 the very tensors w1m, w3m, w2m): backward may add
        // into their .grad.
        ctx->save_for_backward({xm, counts, w1m, w3m, w2m, a_RF, b_RF, to_padded, w1, w3, w2});
        return to_padded.defined() ? out_RD.index_select(0, to_padded) : out_RD;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto saved = ctx->get_saved_variables();
        auto xm = saved[0], counts_E = saved[1], w1m = saved[2], w3m = saved[3], w2m = saved[4];
        auto a_RF = saved[5], b_RF = saved[6], to_padded = saved[7];
        const auto mm_dtype = xm.scalar_type();
        const int64_t E = w1m.size(0), F = w1m.size(1), R = xm.size(0);
        auto gy_RD = grads[0].contiguous().to(mm_dtype);
        if (to_padded.defined()) gy_RD = torch::zeros(xm.sizes(), xm.options()).index_copy_(0, to_padded, gy_RD);
        const auto f32 = a_RF.options();
        auto gx = torch::empty(xm.sizes(), f32);
        // Each weight's gradient goes straight into its .grad where it can (then returned undefined).
        auto gw1 = grad_to_add_into(saved[8]), gw3 = grad_to_add_into(saved[9]), gw2 = grad_to_add_into(saved[10]);
        const bool add1 = gw1.defined(), add3 = gw3.defined(), add2 = gw2.defined();
        if (!add1) gw1 = torch::empty(w1m.sizes(), f32);
        if (!add3) gw3 = torch::empty(w3m.sizes(), f32);
        if (!add2) gw2 = torch::empty(w2m.sizes(), f32);
        auto gh = torch::empty({R, F}, f32), ga = torch::empty({R, F}, f32);
        auto gb = torch::empty({R, F}, f32), h = torch::empty({R, F}, f32);
        const int64_t* counts = counts_E.data_ptr<int64_t>();
        int64_t off = 0;
        for (int64_t e = 0; e < E; ++e) {
            const int64_t n = counts[e];
            if (n == 0) {  // an expert without tokens has a zero gradient (nothing to add)
                if (!add1) gw1[e].zero_();
                if (!add3) gw3[e].zero_();
                if (!add2) gw2[e].zero_();
                continue;
            }
            auto xe = xm.narrow(0, off, n), gye = gy_RD.narrow(0, off, n);
            auto ghe = gh.narrow(0, off, n), gae = ga.narrow(0, off, n), gbe = gb.narrow(0, off, n),
                 he = h.narrow(0, off, n);
            mm_into(ghe, gye, w2m[e]);  // [n, D] x [D, F]
            swiglu_backward_kernel(a_RF.narrow(0, off, n).data_ptr<float>(), b_RF.narrow(0, off, n).data_ptr<float>(),
                                   ghe.data_ptr<float>(), gae.data_ptr<float>(), gbe.data_ptr<float>(),
                                   he.data_ptr<float>(), n * F);
            auto gam = gae.to(mm_dtype), gbm = gbe.to(mm_dtype);
            auto gxe = gx.narrow(0, off, n);
            mm_into(gw2[e], gye.t(), he.to(mm_dtype), add2);   // [D, n] x [n, F]
            mm_into(gw1[e], gam.t(), xe, add1);                // [F, n] x [n, D]
            mm_into(gw3[e], gbm.t(), xe, add3);
            mm_into(gxe, gam, w1m[e]);                   // [n, F] x [F, D]
            if (mm_dtype == torch::kFloat32) gxe.addmm_(gbm, w3m[e]);
            else gxe.add_(at::mm(gbm, w3m[e]));
            off += n;
        }
        const torch::Tensor added;   // undefined: already in the weight's .grad
        return {to_padded.defined() ? gx.index_select(0, to_padded) : gx, torch::Tensor(), add1 ? added : gw1,
                add3 ? added : gw3, add2 ? added : gw2};
    }
};

// RMSNorm of rows [lo, hi) of x [rows, D]: y = x * inv_rms * w, inv_rms kept for backward.
MOE_VECTOR_CLONES
void rms_norm_rows(const float* __restrict xp, const float* __restrict wp, float* __restrict yp, float* __restrict rp,
                   int64_t lo, int64_t hi, int64_t D, float eps) {
    for (int64_t r = lo; r < hi; ++r) {
        const float* xr = xp + r * D;
        const float ss = dot_product(xr, xr, D);
        const float inv = 1.0f / std::sqrt(ss / float(D) + eps);
        rp[r] = inv;
        float* yr = yp + r * D;
        for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * inv * wp[i];
    }
}

// Its backward over rows [lo, hi): dL/dx into gxp, dL/dw added into this thread's partial gw.
MOE_VECTOR_CLONES
void rms_norm_backward_rows(const float* __restrict xp, const float* __restrict wp, const float* __restrict gp,
                            const float* __restrict rp, float* __restrict gxp, float* __restrict gw, int64_t lo,
                            int64_t hi, int64_t D) {
    for (int64_t r = lo; r < hi; ++r) {
        const float* xr = xp + r * D;
        const float* gr = gp + r * D;
        const float inv = rp[r];
        // y = x * inv * w; dL/dx = inv * (g*w) - x * inv^3 * mean(g*w*x)
        const float dot = dot_product(gr, wp, xr, D);
        const float coef = dot * inv * inv * inv / float(D);
        float* gxr = gxp + r * D;
        for (int64_t i = 0; i < D; ++i) {
            gxr[i] = inv * gr[i] * wp[i] - xr[i] * coef;
            gw[i] += gr[i] * xr[i] * inv;
        }
    }
}

struct FusedRmsNorm : public torch::autograd::Function<FusedRmsNorm> {
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& weight,
                                 double eps) {
        auto x = x_in.contiguous();
        const int64_t D = x.size(-1), rows = x.numel() / D;
        auto y = torch::empty_like(x);
        auto inv_rms = torch::empty({rows}, x.options());
        const float* xp = x.data_ptr<float>();
        const float* wp = weight.data_ptr<float>();
        float* yp = y.data_ptr<float>();
        float* rp = inv_rms.data_ptr<float>();
        at::parallel_for(0, rows, 64, [&](int64_t lo, int64_t hi) { rms_norm_rows(xp, wp, yp, rp, lo, hi, D, float(eps)); });
        ctx->save_for_backward({x, weight, inv_rms});
        return y;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto saved = ctx->get_saved_variables();
        auto x = saved[0], weight = saved[1], inv_rms = saved[2];
        auto gy = grads[0].contiguous();
        const int64_t D = x.size(-1), rows = x.numel() / D;
        auto gx = torch::empty_like(x);
        const float* xp = x.data_ptr<float>();
        const float* wp = weight.data_ptr<float>();
        const float* gp = gy.data_ptr<float>();
        const float* rp = inv_rms.data_ptr<float>();
        float* gxp = gx.data_ptr<float>();
        // dL/dw = sum over rows of gy * x * inv; per-thread partial sums, reduced after.
        const int64_t nthreads = at::get_num_threads();
        auto gw_partial = torch::zeros({nthreads, D}, x.options());
        float* gwp = gw_partial.data_ptr<float>();
        at::parallel_for(0, rows, 64, [&](int64_t lo, int64_t hi) {
            rms_norm_backward_rows(xp, wp, gp, rp, gxp, gwp + at::get_thread_num() * D, lo, hi, D);
        });
        return {gx, gw_partial.sum(0), torch::Tensor()};
    }
};

// Rotate-half rotary embedding on x laid out [rows = B*S*N, Hd] with position s = (row / N) % S:
// out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin (cos/sin of the Hd/2 frequencies). The
// backward is the same rotation by the negative angle, so one kernel with a sign serves both.
MOE_VECTOR_CLONES
void rotary_rows(const float* __restrict xp, float* __restrict op, const float* __restrict cp,
                 const float* __restrict sp, int64_t lo, int64_t hi, int64_t Hd, int64_t S, int64_t N,
                 int64_t table_stride, float sign) {
    const int64_t half = Hd / 2;
    for (int64_t r = lo; r < hi; ++r) {
        const int64_t s = (r / N) % S;
        const float* c = cp + s * table_stride;
        const float* sn = sp + s * table_stride;
        const float* x1 = xp + r * Hd;
        float* o1 = op + r * Hd;
        for (int64_t i = 0; i < half; ++i) {
            const float a = x1[i], b = x1[i + half], si = sign * sn[i];
            o1[i] = a * c[i] - b * si;
            o1[i + half] = b * c[i] + a * si;
        }
    }
}

void rotary_kernel(const torch::Tensor& x, torch::Tensor& out, const torch::Tensor& cos_SH, const torch::Tensor& sin_SH,
                   int64_t S, int64_t N, float sign) {
    const int64_t Hd = x.size(-1), rows = x.numel() / Hd;
    const float* xp = x.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const float* cp = cos_SH.data_ptr<float>();
    const float* sp = sin_SH.data_ptr<float>();
    const int64_t table_stride = cos_SH.size(1);
    at::parallel_for(0, rows, 256, [=](int64_t lo, int64_t hi) {
        rotary_rows(xp, op, cp, sp, lo, hi, Hd, S, N, table_stride, sign);
    });
}

struct FusedRotary : public torch::autograd::Function<FusedRotary> {
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_BSNH, const torch::Tensor& cos_SH,
                                 const torch::Tensor& sin_SH) {
        auto x = x_BSNH.contiguous();
        auto out = torch::empty_like(x);
        const int64_t S = x.size(1), N = x.size(2);
        rotary_kernel(x, out, cos_SH, sin_SH, S, N, 1.0f);
        ctx->save_for_backward({cos_SH, sin_SH});
        ctx->saved_data["S"] = S;
        ctx->saved_data["N"] = N;
        return out;
    }
    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto saved = ctx->get_saved_variables();
        auto g = grads[0].contiguous();
        auto gx = torch::empty_like(g);
        rotary_kernel(g, gx, saved[0], saved[1], ctx->saved_data["S"].toInt(), ctx->saved_data["N"].toInt(), -1.0f);
        return {gx, torch::Tensor(), torch::Tensor()};
    }
};

}  // namespace

void set_fused_cpu_kernels(bool enabled) { g_fused_cpu_kernels = enabled; }
bool fused_cpu_kernels_enabled() { return g_fused_cpu_kernels; }
bool use_fused_cpu_kernels(const torch::Tensor& x) {
    return g_fused_cpu_kernels && x.is_cpu() && x.scalar_type() == torch::kFloat32;
}

torch::Tensor fused_rotary(const torch::Tensor& x_BSNH, const torch::Tensor& cos_SH, const torch::Tensor& sin_SH) {
    MOE_CHECK(x_BSNH.dim() == 4 && cos_SH.size(0) >= x_BSNH.size(1) && cos_SH.size(1) * 2 >= x_BSNH.size(3),
              "fused_rotary: x [{}] vs table [{}]", fmt::join(x_BSNH.sizes(), ", "), fmt::join(cos_SH.sizes(), ", "));
    return FusedRotary::apply(x_BSNH, cos_SH, sin_SH);
}

torch::Tensor grouped_swiglu(const torch::Tensor& rows_RD, const std::vector<int64_t>& num_tokens_per_expert,
                             const torch::Tensor& w1_EFD, const torch::Tensor& w3_EFD, const torch::Tensor& w2_EDF) {
    MOE_CHECK(static_cast<int64_t>(num_tokens_per_expert.size()) == w1_EFD.size(0),
              "grouped_swiglu: {} counts for {} experts", num_tokens_per_expert.size(), w1_EFD.size(0));
    auto counts = torch::tensor(num_tokens_per_expert, torch::kInt64);
    return GroupedSwiGLU::apply(rows_RD, counts, w1_EFD, w3_EFD, w2_EDF);
}

torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
    return FusedRmsNorm::apply(x, weight, eps);
}

}  // namespace moe
