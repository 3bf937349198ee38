// Data-parallel gradient averaging: dense gradients over the data group, expert gradients over
// the expert-data group (the replicas holding the same experts). Each flat gradient buffer of
// the ParameterStore is cut into buckets of `bucket_mb`, every bucket's all-reduce is started
// at once (non-blocking) and then awaited, so the transfers pipeline inside the MPI library.
//
//   GradientSync sync(model.params(), *ctx->data, *ctx->expert_data, cfg.parallel.bucket_mb);
//   loss.backward(); sync.average();
#pragma once

#include <cstdint>

#include "moe/parameter_store.h"
#include "parallel/communicator.h"

namespace moe {

class GradientSync {
   public:
    GradientSync(ParameterStore& params, Communicator& data, Communicator& expert_data, double bucket_mb);

    // Sums every gradient over the replicas that hold the same parameter and divides by the number
    // of data-parallel replicas (the step's loss is the mean over them; an expert's gradient
    // already holds its whole expert group's tokens).
    void average();

    int64_t bytes_last_step() const { return bytes_; }
    double seconds_last_step() const { return seconds_; }

   private:
    ParameterStore& params_;
    Communicator& data_;
    Communicator& expert_data_;
    int64_t bucket_elements_;
    int64_t bytes_ = 0;
    double seconds_ = 0;
};

}  // namespace moe
