// Adds an auxiliary loss to the backward pass at the layer that produced it.
//
// attach_aux_loss(out, aux) returns `out` unchanged; when the gradient of `out` arrives in
// backward, the gradient of `aux` (d aux / d aux = 1) is released into aux's graph at the same
// moment. So the total gradient is that of (main loss + aux) without the aux scalar ever
// travelling with the activations: pipeline stages need not ship it. (Megatron-LM calls this
// MoEAuxLossAutoScaler.) The caller scales aux by its coefficient beforehand.
#pragma once

#include <torch/torch.h>

namespace moe {

torch::Tensor attach_aux_loss(const torch::Tensor& out, const torch::Tensor& aux);

}  // namespace moe
