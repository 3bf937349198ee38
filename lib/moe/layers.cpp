#include "moe/layers.h"

#include <cmath>

#include "common/error.h"
#include "moe/fused_ops.h"
#include "moe/precision.h"

namespace moe {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
    if (use_fused_cpu_kernels(x) && weight.scalar_type() == torch::kFloat32) return fused_rms_norm(x, weight, eps);
    return rms_norm_reference(x, weight, eps);
}

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
    auto xf = x.scalar_type() == torch::kFloat64 ? x : x.to(torch::kFloat32);
    auto inv_rms = torch::rsqrt(xf.square().mean(-1, true) + eps);
    return (xf * inv_rms).to(x.scalar_type()) * weight;
}

RotaryTables RotaryTables::make(int64_t max_len, int64_t head_dim, double theta) {
    MOE_CHECK(head_dim % 2 == 0, "rotary embedding needs an even head dim, got {}", head_dim);
    auto idx = torch::arange(0, head_dim, 2, torch::kFloat64) / double(head_dim);
    auto inv_freq = torch::pow(theta, -idx);                                     // [Hd/2]
    auto freqs = torch::outer(torch::arange(max_len, torch::kFloat64), inv_freq);  // [S, Hd/2]
    auto emb = torch::cat({freqs, freqs}, 1);                                    // [S, Hd]
    return RotaryTables{emb.cos().to(torch::kFloat32), emb.sin().to(torch::kFloat32)};
}

torch::Tensor apply_rotary(const torch::Tensor& x_BNSH, const RotaryTables& rope, int64_t seq_len) {
    const int64_t half = x_BNSH.size(-1) / 2;
    auto cos = rope.cos.narrow(0, 0, seq_len);
    auto sin = rope.sin.narrow(0, 0, seq_len);
    auto rotated = torch::cat({-x_BNSH.narrow(-1, half, half), x_BNSH.narrow(-1, 0, half)}, -1);
    return x_BNSH * cos + rotated * sin;
}

torch::Tensor attention(const torch::Tensor& x_BSD, const AttentionWeights& w, int64_t n_heads, int64_t n_kv_heads,
                        const RotaryTables& rope) {
    const int64_t B = x_BSD.size(0), S = x_BSD.size(1);
    const int64_t Hd = w.q_proj.size(0) / n_heads;
    // Under bf16 autocast x is cast once for the three projections (autocast casts per matmul).
    const auto x = x_BSD.to(autocast_matmul_dtype(x_BSD.device().type()));
    auto q = torch::matmul(x, w.q_proj.t()).view({B, S, n_heads, Hd});
    auto k = torch::matmul(x, w.k_proj.t()).view({B, S, n_kv_heads, Hd});
    auto v = torch::matmul(x, w.v_proj.t()).view({B, S, n_kv_heads, Hd}).transpose(1, 2);
    if (q.is_cpu() && q.scalar_type() == torch::kBFloat16 && fused_cpu_kernels_enabled()) {
        // bf16 autocast on the CPU: the float32 kernel beats rotating in bfloat16 with plain ops
        // (attention casts back to bfloat16 anyway).
        q = q.to(torch::kFloat32);
        k = k.to(torch::kFloat32);
    }
    if (use_fused_cpu_kernels(q)) {
        q = fused_rotary(q, rope.cos, rope.sin).transpose(1, 2);
        k = fused_rotary(k, rope.cos, rope.sin).transpose(1, 2);
    } else {
        q = apply_rotary(q.transpose(1, 2), rope, S);
        k = apply_rotary(k.transpose(1, 2), rope, S);
    }
    // libtorch's fused causal attention (on CPU the flash kernel: blocked online softmax, the S x S
    // scores never stored, backward recomputed per block), 9% faster per tiny.yaml step than
    // baddbmm + softmax + bmm over materialised scores (docs/performance.md). enable_gqa: each
    // key/value head serves n_heads / n_kv_heads consecutive query heads, as HF's repeat_kv.
    auto out = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true,
                                                /*scale=*/std::nullopt, /*enable_gqa=*/n_heads != n_kv_heads);
    return torch::matmul(out.transpose(1, 2).reshape({B, S, n_heads * Hd}), w.o_proj.t());
}

torch::Tensor swiglu(const torch::Tensor& x_ND, const torch::Tensor& w1_FD, const torch::Tensor& w3_FD,
                     const torch::Tensor& w2_DF) {
    auto h = torch::silu(torch::mm(x_ND, w1_FD.t())) * torch::mm(x_ND, w3_FD.t());
    return torch::mm(h, w2_DF.t());
}

}  // namespace moe
