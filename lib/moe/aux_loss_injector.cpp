#include "moe/aux_loss_injector.h"

namespace moe {
namespace {

struct AuxLossInjector : public torch::autograd::Function<AuxLossInjector> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& out,
                                 const torch::Tensor& aux) {
        ctx->saved_data["aux_options"] = aux.options().dtype() == torch::kFloat64;
        return out;
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        bool f64 = ctx->saved_data["aux_options"].toBool();
        auto one = torch::ones({}, f64 ? torch::kFloat64 : torch::kFloat32);
        return {grads[0], one};
    }
};

}  // namespace

torch::Tensor attach_aux_loss(const torch::Tensor& out, const torch::Tensor& aux) {
    if (!aux.defined() || !aux.requires_grad()) return out;
    return AuxLossInjector::apply(out, aux);
}

}  // namespace moe
