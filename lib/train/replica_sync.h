// How the replicas of the model keep in step: one strategy per run, chosen by config, behind one
// interface, so the step loop never branches on the mode (DESIGN sections 3 and 4).
//
// The step calls the hooks at fixed points:
//   params.zero_grads();
//   executor.run(..., [&] { sync.before_last_backward(); });   // hooks may start sending
//   sync.after_backward();     // start what backward did not; collectives on the groups may follow
//   ... the step's scalars ...
//   sync.finish_gradients();   // the gradients every replica steps with (also on a skipped step)
//   clip, optimizer step
//   sync.after_optimizer_step(step);
//
// Implementations: plain (the bucketed all-reduce driven by autograd hooks, lib/parallel/grad_sync.h).
// Compressed and time-dilated strategies plug in here (make_replica_sync).
#pragma once

#include <cstdint>
#include <memory>

#include "config/config.h"
#include "moe/parameter_store.h"
#include "parallel/parallel_context.h"

namespace moe {

// What one step's gradient exchange cost this rank.
struct SyncStats {
    double seconds = 0;   // exchange time backward did not hide
    int64_t bytes = 0;    // bytes this rank contributed to reductions
};

class ReplicaSync {
   public:
    virtual ~ReplicaSync() = default;

    // Right before the backward pass of the step's last micro-batch.
    virtual void before_last_backward() = 0;
    // Right after that backward pass, before other collectives on the same groups.
    virtual void after_backward() = 0;
    // Leaves every rank's gradients ready for clipping and the optimizer step. Also called on a
    // step that will be skipped (exchanges in flight must finish on every rank).
    virtual void finish_gradients() = 0;
    // After the optimizer step of 0-based `step`.
    virtual void after_optimizer_step(int64_t step) {}

    virtual SyncStats last_step() const = 0;
};

// The strategy the config asks for, over this rank's groups.
std::unique_ptr<ReplicaSync> make_replica_sync(const Config& cfg, ParameterStore& params, ParallelContext& par);

}  // namespace moe
