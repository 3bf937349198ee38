#include "moe/aux_loss_injector.h"

namespace moe {
namespace {

struct AuxLossInjector : public torch::autograd::Function<AuxLossInjector> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& out,
                                 const torch::Tensor& aux) {
        ctx->saved_data["aux_dtype"] = aux.scalar_type();
        ctx->saved_data["aux_device"] = aux.device();
        return out;
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        auto one = torch::ones({}, torch::TensorOptions(ctx->saved_data["aux_device"].toDevice())
                                       .dtype(ctx->saved_data["aux_dtype"].toScalarType()));
        return {grads[0], one};
    }
};

}  // namespace

torch::Tensor attach_aux_loss(const torch::Tensor& out, const torch::Tensor& aux) {
    if (!aux.defined() || !aux.requires_grad()) return out;
    return AuxLossInjector::apply(out, aux);
}

}  // namespace moe
