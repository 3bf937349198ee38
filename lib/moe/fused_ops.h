// Autograd functions with hand-written backward passes for the hot spots of a CPU training step.
// The profile of the eager implementation (DESIGN.md section 8) is dominated by elementwise
// passes over memory, and by autograd materialising a full [E, F, D] zero gradient for every
// w[e] slice it indexes. These functions compute the same values with fewer passes:
//
// - grouped_swiglu: all local experts' SwiGLU over rows grouped by expert; gradients of the
//   stacked weights are written slice by slice into one buffer (no per-expert zero-fill + add),
//   and silu/gating and their derivatives are one fused loop each way.
// - fused_rms_norm: RMSNorm forward in one pass per row, backward in two.
// - fused_rotary: rotary embedding in one pass each way (no narrow/cat, no zero-filled slices).
//
// Each has a plain-op twin (layers.h) that the tests compare against. The twins are also what runs
// on CUDA (these kernels are CPU loops), so tests can switch the kernels off to run the GPU's ops
// on the CPU.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace moe {

// On by default; off, every caller takes the plain-op twin (tests of the CUDA code path on a CPU).
void set_fused_cpu_kernels(bool enabled);
bool fused_cpu_kernels_enabled();
// True when `x` may go through these kernels: a float32 CPU tensor, kernels enabled.
bool use_fused_cpu_kernels(const torch::Tensor& x);

// rows_RD grouped by expert (counts sum to R); w1, w3 [E, F, D]; w2 [E, D, F] -> [R, D] (float32).
// Inside a bf16 AutocastScope the matmuls run in bfloat16 (SwiGLU itself stays float32).
torch::Tensor grouped_swiglu(const torch::Tensor& rows_RD, const std::vector<int64_t>& num_tokens_per_expert,
                             const torch::Tensor& w1_EFD, const torch::Tensor& w3_EFD, const torch::Tensor& w2_EDF);

// Rotate-half rotary embedding of x_BSNH [B, S, N heads, Hd] (float32) with cos/sin tables
// [max_len, >= Hd/2] of the Hd/2 frequencies (only the first Hd/2 columns are read).
torch::Tensor fused_rotary(const torch::Tensor& x_BSNH, const torch::Tensor& cos_SH, const torch::Tensor& sin_SH);

// x [..., D] float32, weight [D] -> x * rsqrt(mean(x^2) + eps) * weight.
torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace moe
