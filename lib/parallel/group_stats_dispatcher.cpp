#include "parallel/group_stats_dispatcher.h"

namespace moe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Sum over the group; the backward sums the gradients over the group (see the header).
struct GroupSum : public torch::autograd::Function<GroupSum> {
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& t, Communicator* group) {
        ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
        auto sum = t.contiguous().clone();
        group->all_reduce(sum);
        return sum;
    }
    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto* group = reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
        auto g = grads[0].contiguous().clone();
        group->all_reduce(g);
        return {g, torch::Tensor()};
    }
};

}  // namespace

torch::Tensor GroupStatsDispatcher::all_reduce_sum(const torch::Tensor& t) { return GroupSum::apply(t, &group_); }

}  // namespace moe
