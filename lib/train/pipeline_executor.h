// Runs one training step's pipeline schedule (lib/parallel/pipeline_schedule.h) on this rank's
// stage: forward and backward of each micro-batch through the stage's slice of the model, with
// activations sent to the next stage and their gradients sent back, over the pipeline group.
// With one stage the schedule is forward(i), backward(i) for each micro-batch: the plain
// gradient-accumulation loop, so every layout runs through this one path.
//
// Sends are non-blocking (the schedules are checked deadlock-free under that rule) and polled
// after every computation so MPI moves them along; receives block, and the time spent in them
// (and at the end waiting for the other stages) is the stage's idle time, the measured bubble. Aux and z losses need no shipping:
// each MoE layer injects its gradient during its own backward.
//
//   PipelineExecutor exec(model, *ctx->pipeline, make_schedule(ScheduleKind::one_f_one_b, P, M));
//   PipelineStepOutput out = exec.run(inputs_BS, targets_BS, [&] { grad_sync.arm(); });
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>

#include "moe/transformer.h"
#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"

namespace moe {

struct PipelineStepOutput {
    double loss = 0;           // mean cross-entropy of the batch (last stage; 0 on the others)
    double aux_loss_sum = 0;   // over this stage's MoE layers, micro-batch weighted
    double z_loss_sum = 0;
    int64_t moe_layers = 0;    // MoE layers on this stage
    int64_t routed = 0, dropped = 0;
    double seconds = 0;        // the whole schedule
    double idle_seconds = 0;   // blocked waiting for a neighbour's activation or gradient, or
                               // for the other stages to finish the step
};

class PipelineExecutor {
   public:
    // `pipeline`: this replica's stages in stage order (its rank is this rank's stage).
    PipelineExecutor(MoeTransformer& model, Communicator& pipeline, PipelineSchedule schedule);

    // inputs_BS and targets_BS are the whole batch on every stage (stage 0 reads the inputs, the
    // last stage the targets). `before_last_backward` runs right before the step's final
    // backward (the gradients it completes can be reduced while it runs).
    PipelineStepOutput run(const torch::Tensor& inputs_BS, const torch::Tensor& targets_BS,
                           const std::function<void()>& before_last_backward);

   private:
    MoeTransformer& model_;
    Communicator& pipeline_;
    PipelineSchedule schedule_;
    int stage_;
    bool first_, last_;
};

}  // namespace moe
