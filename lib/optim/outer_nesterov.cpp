#include "optim/outer_nesterov.h"

namespace moe {

OuterNesterov::OuterNesterov(int64_t numel, double lr, double momentum, torch::Device device)
    : lr_(lr), momentum_(momentum), buf_(torch::zeros({numel}, torch::TensorOptions(device))) {}

void OuterNesterov::step(torch::Tensor& anchor, const torch::Tensor& delta) {
    torch::NoGradGuard no_grad;
    if (momentum_ == 0) {   // plain averaging step: no buffer to carry
        anchor.sub_(delta, lr_);
        return;
    }
    buf_.mul_(momentum_).add_(delta);
    anchor.sub_(delta, lr_).sub_(buf_, lr_ * momentum_);
}

}  // namespace moe
