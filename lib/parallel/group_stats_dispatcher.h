// moe.aux_loss_scope: global across replicas. Wraps the dispatcher that moves the rows and sums
// the router statistics (expert counts, token counts, probability mass) over the data group
// instead, so the Switch loss is computed from f and P of the global batch: the value one rank
// computes on the union of all replicas' batches.
//
// The sum is differentiable: its backward sums the gradients over the group too. Why that is
// right: every replica computes the same global loss A; the step's loss is the mean over
// replicas, so d(mean)/d(rank r's probabilities) must equal dA/d(P) once, while each replica's
// backward only sees its own copy; summing the incoming gradients (dp copies of dA/dP) and the
// data-parallel averaging (1/dp) give exactly that.
#pragma once

#include <memory>

#include "moe/expert_dispatcher.h"
#include "parallel/communicator.h"

namespace moe {

class GroupStatsDispatcher final : public ExpertDispatcher {
   public:
    GroupStatsDispatcher(std::shared_ptr<ExpertDispatcher> inner, Communicator& data_group)
        : inner_(std::move(inner)), group_(data_group) {}

    int64_t first_local_expert() const override { return inner_->first_local_expert(); }
    int64_t num_local_experts() const override { return inner_->num_local_experts(); }
    DispatchResult dispatch(const torch::Tensor& rows_SD, const std::vector<int64_t>& counts) override {
        return inner_->dispatch(rows_SD, counts);
    }
    torch::Tensor combine(const torch::Tensor& out_RD, const DispatchResult& d) override { return inner_->combine(out_RD, d); }
    torch::Tensor all_reduce_sum(const torch::Tensor& t) override;
    int64_t group_size() const override { return group_.size(); }

   private:
    std::shared_ptr<ExpertDispatcher> inner_;
    Communicator& group_;
};

}  // namespace moe
