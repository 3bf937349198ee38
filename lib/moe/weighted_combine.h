// Step 6 of the MoE layer (moe_layer.h), un-permute, as one autograd function on the CPU:
//   out[t] = sum over the assignments a routed from token t of weight[a] * rows[a]
// The plain-op form (rows * weights.unsqueeze(1), then index_add into zeros) makes five passes
// over the [A, D] rows forward and back, through broadcasting multiplies that ATen does not
// vectorise for a [A, 1] operand; a token's top-2 rows are cheap to add up in one loop instead.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moe {

// rows_AD [A, D] float32, weights_A [A] float32, token_ids_A [A] int64 in [0, num_tokens) ->
// [num_tokens, D]; differentiable in rows and weights. Every token's rows are added in order of a,
// as index_add does (a token with no rows gets zeros).
torch::Tensor weighted_combine(const torch::Tensor& rows_AD, const torch::Tensor& weights_A,
                               const torch::Tensor& token_ids_A, int64_t num_tokens);

// The plain-op twin (any dtype and device): what weighted_combine computes.
torch::Tensor weighted_combine_reference(const torch::Tensor& rows_AD, const torch::Tensor& weights_A,
                                         const torch::Tensor& token_ids_A, int64_t num_tokens);

}  // namespace moe
