// The outer exchange of time-dilated asynchronous SGD for one parameter group (DESIGN section 6):
// at a window's end every rank contributes its token-weighted pseudo-gradient
// n * (theta_anchor - theta), and n itself, to a non-blocking all-reduce over the group (dense
// parameters: the data group; experts: the expert-data group); the caller goes on with inner
// steps and polls. Completed, it yields the weighted mean delta = sum_w n_w (anchor - theta_w) /
// sum_w n_w, the same bits on every rank (one reduction result, broadcast by the collective).
// Beside the tokens travels each rank's stop vote, so every replica learns of a stop at the same
// merge. The reductions run on a private duplicate of the group, so no other collective on it
// can interleave with one in flight.
//
//   PseudoGradientExchange ex(*ctx->data, "dense");
//   ex.launch(anchor, params.values(ParamGroup::dense), tokens, stop_vote);
//   while (!ex.test()) inner_step();
//   outer.step(anchor, ex.mean_delta());
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace moe {

class PseudoGradientExchange {
   public:
    PseudoGradientExchange(Communicator& group, const std::string& name);

    // Starts the exchange of n * (anchor - theta) and [n, stop_vote]. One at a time.
    void launch(const torch::Tensor& anchor, const torch::Tensor& theta, int64_t tokens, int64_t stop_vote);
    bool in_flight() const { return in_flight_; }
    // Moves the exchange along; true once it is complete (wait() then returns at once).
    bool test();
    // Completes it: mean_delta(), total_tokens() and stop_votes() are then this exchange's.
    void wait();

    const torch::Tensor& mean_delta() const { return sum_; }
    int64_t total_tokens() const { return total_tokens_; }
    int64_t stop_votes() const { return stop_votes_; }
    // Bytes this rank contributed to the last exchange's reductions.
    int64_t bytes_last() const { return bytes_; }
    int group_size() const { return comm_->size(); }

   private:
    std::unique_ptr<Communicator> comm_;
    torch::Tensor sum_;      // float32: n (anchor - theta), then the mean delta
    torch::Tensor counts_;   // int64: [tokens, stop votes]
    std::unique_ptr<CommRequest> sum_request_, counts_request_;
    bool in_flight_ = false;
    int64_t total_tokens_ = 0, stop_votes_ = 0, bytes_ = 0;
};

}  // namespace moe
