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
//
// Implementations (make_replica_sync): plain (the bucketed all-reduce driven by autograd hooks,
// lib/parallel/grad_sync.h) and compressed (lib/compress/low_rank_compressor.h: dense gradients
// over the data group, experts over the expert-data group). The time-dilated strategy plugs in here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "moe/parameter_store.h"
#include "parallel/parallel_context.h"

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

class ReplicaSync {
   public:
    virtual ~ReplicaSync() = default;

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
    virtual bool state_differs_per_rank() const { return false; }
    // After a checkpoint's state was copied into state()'s tensors.
    virtual void state_loaded() {}
};

// The strategy the config asks for, over this rank's groups.
std::unique_ptr<ReplicaSync> make_replica_sync(const Config& cfg, ParameterStore& params, ParallelContext& par);

}  // namespace moe
