// Compute precision of the model's forward and backward, and the scope that applies it.
//
// train.precision: bf16 runs matmuls and attention in bfloat16 through libtorch's autocast, on CPU
// (AVX512_BF16) as on CUDA; parameters, gradients, optimizer state and checkpoints stay float32
// (autocast casts the float32 master weights per forward, and their gradients come back float32).
// Norms, softmax, routing and the loss stay float32.
//
//   {
//       moe::AutocastScope bf16(device.type(), moe::Precision::bf16);   // matmuls in bfloat16 here
//       h = layer(h);
//   }
//   moe::AutocastScope fp32(x.device().type(), moe::Precision::fp32);  // off again inside (the router)
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace moe {

enum class Precision { fp32, bf16 };

inline const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

// Turns autocast on (bf16) or off (fp32) for one device type until the end of the scope, and
// restores what was there before. Like Python's torch.autocast, the outermost scope clears the
// cache of casted weights on exit, so every forward casts the weights as they are now.
class AutocastScope {
   public:
    AutocastScope(c10::DeviceType device, Precision precision)
        : device_(device),
          was_enabled_(at::autocast::is_autocast_enabled(device)),
          was_dtype_(at::autocast::get_autocast_dtype(device)) {
        at::autocast::set_autocast_enabled(device_, precision == Precision::bf16);
        at::autocast::set_autocast_dtype(device_, at::kBFloat16);
        at::autocast::increment_nesting();
    }
    ~AutocastScope() {
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
        at::autocast::set_autocast_enabled(device_, was_enabled_);
        at::autocast::set_autocast_dtype(device_, was_dtype_);
    }
    AutocastScope(const AutocastScope&) = delete;
    AutocastScope& operator=(const AutocastScope&) = delete;

   private:
    c10::DeviceType device_;
    bool was_enabled_;
    at::ScalarType was_dtype_;
};

// The dtype matmuls run in on `device` right now: bfloat16 inside an AutocastScope(bf16), else float32.
inline at::ScalarType autocast_matmul_dtype(c10::DeviceType device) {
    return at::autocast::is_autocast_enabled(device) ? at::autocast::get_autocast_dtype(device) : at::kFloat;
}

}  // namespace moe
