// Expert parallelism: the ExpertDispatcher whose experts are spread over the ranks of an expert
// group (rank r holds experts r*E/ep .. (r+1)*E/ep - 1). dispatch() tells every rank how many
// rows each of its experts gets from here (a small all-to-all of counts), sends the rows
// (all-to-all with variable counts) and regroups what arrived by local expert; combine() undoes
// both. The row exchanges are autograd functions whose backward is the reverse exchange, so the
// gradients of rows and expert weights flow across ranks. Ranks and experts that get no rows are
// fine: every rank still takes part in every exchange.
#pragma once

#include "moe/expert_dispatcher.h"
#include "parallel/communicator.h"

namespace moe {

// Time and payload bytes sent by the exchanges (forward and backward) since the last reset.
struct ExchangeStats {
    double seconds = 0;
    int64_t bytes = 0;
};

class AllToAllDispatcher final : public ExpertDispatcher {
   public:
    // `group` is this rank's expert group; it must outlive the dispatcher.
    AllToAllDispatcher(Communicator& group, int64_t num_experts);

    int64_t first_local_expert() const override { return first_; }
    int64_t num_local_experts() const override { return local_; }
    DispatchResult dispatch(const torch::Tensor& rows_SD, const std::vector<int64_t>& num_tokens_per_expert) override;
    torch::Tensor combine(const torch::Tensor& out_RD, const DispatchResult& dispatched) override;
    // Statistics only (expert load, dropped tokens) over the expert group: refuses tensors that
    // need a gradient (the global aux-loss scope wraps dispatchers in GroupStatsDispatcher).
    torch::Tensor all_reduce_sum(const torch::Tensor& t) override;
    int64_t group_size() const override { return group_.size(); }

    const ExchangeStats& stats() const { return stats_; }
    void reset_stats() { stats_ = {}; }

   private:
    Communicator& group_;
    int64_t num_experts_, local_, first_;
    ExchangeStats stats_;
};

}  // namespace moe
