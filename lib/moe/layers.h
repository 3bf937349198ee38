// The building blocks of a Mixtral decoder layer, as functions over tensors (parameters are
// owned by ParameterStore): RMSNorm, rotary embedding, grouped-query causal attention, SwiGLU.
//
// Letters: B batch, S sequence, D model width, H query heads, G key/value heads, Hd head dim,
// F hidden width of one SwiGLU.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moe {

// Hugging Face Mixtral RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, computed in float32.
// float32 goes through the fused kernel (fused_ops.h); rms_norm_reference is the plain-op form.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotary tables for positions 0..max_len-1, computed once per model: cos/sin [max_len, Hd]
// in the rotate-half layout (the Hd/2 frequencies repeated twice).
struct RotaryTables {
    torch::Tensor cos;  // [max_len, Hd]
    torch::Tensor sin;  // [max_len, Hd]
    static RotaryTables make(int64_t max_len, int64_t head_dim, double theta);
};

// q or k laid out [B, heads, S, Hd]: x * cos + rotate_half(x) * sin.
torch::Tensor apply_rotary(const torch::Tensor& x_BNSH, const RotaryTables& rope, int64_t seq_len);

struct AttentionWeights {
    torch::Tensor q_proj;  // [H*Hd, D]
    torch::Tensor k_proj;  // [G*Hd, D]
    torch::Tensor v_proj;  // [G*Hd, D]
    torch::Tensor o_proj;  // [D, H*Hd]
};

// Causal grouped-query self-attention over x_BSD (already normalised).
torch::Tensor attention(const torch::Tensor& x_BSD, const AttentionWeights& w, int64_t n_heads, int64_t n_kv_heads,
                        const RotaryTables& rope);

// SwiGLU MLP w2(silu(w1 x) * w3 x) with HF layouts w1, w3 [F, D], w2 [D, F]; x_ND any rows.
torch::Tensor swiglu(const torch::Tensor& x_ND, const torch::Tensor& w1_FD, const torch::Tensor& w3_FD,
                     const torch::Tensor& w2_DF);

}  // namespace moe
