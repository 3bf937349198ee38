// The outer optimizer of time-dilated asynchronous SGD (DESIGN section 6): Nesterov SGD on the
// anchor parameters, fed the token-weighted pseudo-gradient delta = mean_w(theta_anchor - theta_w),
// as DiLoCo does (torch.optim.SGD with nesterov=True):
//   buf = momentum * buf + delta;  anchor -= lr * (delta + momentum * buf)
// With momentum 0 and lr 1 the anchor becomes the weighted mean of the replicas' parameters.
// One instance per flat parameter buffer (dense, experts); its state is the momentum buffer.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moe {

class OuterNesterov {
   public:
    OuterNesterov(int64_t numel, double lr, double momentum, torch::Device device = torch::kCPU);

    // anchor -= lr * nesterov(delta); `delta` is read only.
    void step(torch::Tensor& anchor, const torch::Tensor& delta);

    torch::Tensor& momentum_buffer() { return buf_; }

   private:
    double lr_, momentum_;
    torch::Tensor buf_;
};

}  // namespace moe
