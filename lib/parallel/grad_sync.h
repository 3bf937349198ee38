// Data-parallel gradient averaging: dense gradients over the data group, expert gradients over
// the expert-data group (the replicas holding the same experts).
//
// Each flat gradient buffer of the ParameterStore is cut into buckets of about `bucket_mb`, on
// parameter boundaries, in reverse declaration order (the order backward produces them: last
// layer first). When armed before the backward pass of a step's last micro-batch, a post-hook on
// every parameter's gradient accumulator counts the bucket's parameters down and starts its
// non-blocking all-reduce as soon as the last one has its gradient, so communication overlaps
// the rest of backward (as PyTorch DDP's reducer does). Buckets start strictly in bucket order
// on every rank, whatever order the hooks fire in, so the collectives match across ranks.
// The reductions run on private duplicates of the groups, so other collectives on the data group
// during backward (global router statistics) cannot interleave with them.
//
//   GradientSync sync(model.params(), *ctx->data, *ctx->expert_data, cfg.parallel.bucket_mb);
//   sync.arm();               // before the last micro-batch's backward
//   loss.backward();
//   sync.average();           // starts what is left, waits, divides
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <memory>
#include <vector>

#include "moe/parameter_store.h"
#include "parallel/communicator.h"

namespace torch::autograd {
struct Node;
}

namespace moe {

class GradientSync {
   public:
    // overlap = false: no hooks; average() starts every bucket after backward (for comparison).
    GradientSync(ParameterStore& params, Communicator& data, Communicator& expert_data, double bucket_mb,
                 bool overlap = true);
    ~GradientSync();

    // The next backward pass completes this step's gradients: start buckets as they fill.
    void arm();
    // Starts the buckets not started yet (parameters that received no gradient), in order. Called
    // by average(); call it directly right after backward when collectives on the same groups
    // follow before average().
    void start_remaining();
    // Waits for every bucket, then divides by the number of data-parallel replicas (the step's
    // loss is the mean over them; an expert's gradient already holds its whole expert group's tokens).
    void average();

    int64_t num_buckets() const { return int64_t(buckets_.size()); }
    // Buckets started by hooks during the last step's backward (the rest started after it).
    int64_t buckets_started_in_backward() const { return started_in_backward_; }
    int64_t bytes_last_step() const { return bytes_; }
    // Time from start_remaining() (the end of backward) to the averaged gradients: the
    // communication backward did not hide, plus whatever the caller ran in between.
    double seconds_last_step() const { return seconds_; }

   private:
    struct Bucket {
        torch::Tensor grads;           // view of the flat gradient buffer
        Communicator* comm = nullptr;  // private duplicate of the data or expert-data group
        int num_params = 0;
        int pending = 0;               // parameters still without their gradient this step
        std::unique_ptr<CommRequest> request;
    };

    void on_gradient_ready(size_t bucket);
    int64_t start_in_order(bool only_ready);
    void poll();

    ParameterStore& params_;
    int data_size_;
    std::unique_ptr<Communicator> data_grads_, expert_grads_;
    std::vector<Bucket> buckets_;
    bool armed_ = false;
    std::shared_ptr<bool> alive_;   // hooks check it: autograd nodes may outlive this object
    std::optional<std::chrono::steady_clock::time_point> backward_done_;   // set by start_remaining()
    std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;   // hooks live on these
    int64_t started_in_backward_ = 0;
    int64_t bytes_ = 0;
    double seconds_ = 0;
};

}  // namespace moe
