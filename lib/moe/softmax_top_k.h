// The router's per-token arithmetic as one autograd function on the CPU: softmax over the E
// expert logits, the top-K experts with their (optionally renormalised) weights, and the
// log-sum-exp the z-loss squares. In plain ops that is softmax, topk, sum, div and logsumexp
// forward, and as many backward nodes, each a pass over [T, E] with E as small as 8, where
// ATen's vectorised loops do not pay; one loop per token does all of it both ways.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moe {

struct SoftmaxTopK {
    torch::Tensor probs_TE;     // softmax(logits) (differentiable)
    torch::Tensor weights_TK;   // probs of the top K, divided by their sum when renormalised (differentiable)
    torch::Tensor ids_TK;       // int64 expert of each weight, by descending probability
    torch::Tensor lse_T;        // logsumexp(logits) per token (differentiable)
};

// logits_TE float32 [T, E], 1 <= k <= E. Ties go to the lower expert index. Off the CPU or in
// another dtype (or with the fused kernels switched off) the plain ops compute the same.
SoftmaxTopK softmax_top_k(const torch::Tensor& logits_TE, int64_t k, bool renormalize);

// The plain-op twin.
SoftmaxTopK softmax_top_k_reference(const torch::Tensor& logits_TE, int64_t k, bool renormalize);

}  // namespace moe
