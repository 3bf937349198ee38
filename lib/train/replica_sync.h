// How the replicas of the model keep in step: one strategy per run, chosen by config, behind one
// interface, so the step loop never branches on the mode (DESIGN sections 3 and 4).
//
// The step calls the hooks at fixed points:
//   params.zero_grads();
//   executor.run(..., [&] { sync.before_last_backward(); });   // hooks may start sending
//   sync.after_backward();     // start what backward did not; collectives on the groups may follow
//   ... the step's scalars ...
//   sync.finish_gradients(step, skipped);   // the gradients every replica steps with
//   clip, optimizer step
//   sync.after_optimizer_step(step);
//   outcome = sync.end_step(steps_done, signalled, stop_after_reached);   // finished? stop? save?
//
// The strategy also owns the loop's clock: when the run is finished, when every rank agrees to
// stop, which step the LR schedule is at and which group a step's scalars are averaged over.
// Step-locked strategies answer from the step count; the time-dilated one from its merges.
//
// Implementations (make_replica_sync): plain (the bucketed all-reduce driven by autograd hooks,
// lib/parallel/grad_sync.h), compressed (lib/compress/low_rank_compressor.h: dense gradients
// over the data group, experts over the expert-data group), and time-dilated asynchronous SGD
// (lib/train/time_dilated_sync.h: model replicas step apart and merge at window ends).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "moe/parameter_store.h"
#include "parallel/parallel_context.h"
#include "record/run_record.h"

namespace moe {

// What one step's gradient exchange cost this rank.
struct SyncStats {
    double seconds = 0;        // exchange time backward did not hide
    int64_t bytes = 0;         // bytes this rank contributed to reductions
    int64_t plain_bytes = 0;   // what the plain all-reduce of the same gradients sends
    double energy = -1;        // compressed: mean captured energy (-1: not compressed this step)
    double mean_rank = 0;      // compressed: mean rank over the compressed matrices
};

// A tensor of the strategy's state for checkpoints, by name under /state/.
struct SyncStateEntry {
    std::string name;
    torch::Tensor value;   // the live tensor
};

// What the loop does after a step; the same answer on every rank that must act together.
struct StepOutcome {
    bool finished = false;   // the training budget is spent: this was the run's last step
    bool stop = false;       // every rank stops here (a signal or --stop-after): save, end
    bool save = false;       // a periodic checkpoint is due here
};

class ReplicaSync {
   public:
    virtual ~ReplicaSync() = default;

    // --- the loop's clock ---
    // The ranks whose step scalars (loss, aux loss, routing counts) are averaged and whose
    // tokens make up one step: the data group when replicas step together, the model replica's
    // expert group when they do not.
    virtual Communicator& step_group() = 0;
    // The 0-based step the LR schedule is at for this rank's 0-based step `step`.
    virtual int64_t schedule_step(int64_t step) const { return step; }
    // After every step, on every rank (`steps_done`: steps this rank has completed; `signalled`:
    // a stop signal reached this rank; `stop_after_reached`: --stop-after's count is reached).
    virtual StepOutcome end_step(int64_t steps_done, bool signalled, bool stop_after_reached) = 0;
    // Whether a run that starts with `steps_done` steps already taken has nothing left to do.
    virtual bool finished_at(int64_t steps_done) const = 0;
    // The step a checkpoint saved now is labelled with (the same on every rank; may be collective).
    virtual int64_t checkpoint_step(int64_t steps_done) { return steps_done; }
    // Whether a run can resume from its checkpoints.
    virtual bool resumable() const { return true; }
    // Collective, after the loop: each model replica's facts for the record (empty when the
    // replicas step together).
    virtual std::vector<AsyncReplicaSummary> replica_summaries() { return {}; }

    // Right before the backward pass of the step's last micro-batch.
    virtual void before_last_backward() = 0;
    // Right after that backward pass, before other collectives on the same groups.
    virtual void after_backward() = 0;
    // Leaves every rank's gradients ready for clipping and the optimizer step of 0-based `step`.
    // Also called on a step every rank will skip (non-finite loss): exchanges in flight must
    // finish, and state must not learn from that step's gradients.
    virtual void finish_gradients(int64_t step, bool skipped) = 0;
    // After the optimizer step of 0-based `step`.
    virtual void after_optimizer_step(int64_t step) {}

    virtual SyncStats last_step() const = 0;

    // State a resumed run needs to continue bit for bit (none for the plain strategy), and
    // whether it differs between replicas (then every rank saves its own shard).
    virtual std::vector<SyncStateEntry> state() { return {}; }
    // Its integer counters, by name under /state/sync_counters (loaded with state()'s tensors).
    virtual std::vector<SyncCounter> counters() { return {}; }
    virtual bool state_differs_per_rank() const { return false; }
    // After a checkpoint's state was copied into state()'s tensors.
    virtual void state_loaded() {}
};

// The strategy the config asks for, over this rank's groups.
std::unique_ptr<ReplicaSync> make_replica_sync(const Config& cfg, ParameterStore& params, ParallelContext& par);

}  // namespace moe
