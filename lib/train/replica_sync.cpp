#include "train/replica_sync.h"

#include "parallel/grad_sync.h"

namespace moe {

namespace {

// Synchronous data parallelism: dense gradients averaged over the data group, expert gradients
// over the expert-data group, in buckets started by autograd hooks while backward runs.
class PlainReplicaSync final : public ReplicaSync {
   public:
    PlainReplicaSync(const Config& cfg, ParameterStore& params, ParallelContext& par)
        : sync_(params, *par.data, *par.expert_data, cfg.parallel.bucket_mb, cfg.parallel.overlap_grad_sync) {}

    void before_last_backward() override { sync_.arm(); }
    void after_backward() override { sync_.start_remaining(); }
    void finish_gradients() override { sync_.average(); }
    SyncStats last_step() const override { return {sync_.seconds_last_step(), sync_.bytes_last_step()}; }

   private:
    GradientSync sync_;
};

}  // namespace

std::unique_ptr<ReplicaSync> make_replica_sync(const Config& cfg, ParameterStore& params, ParallelContext& par) {
    return std::make_unique<PlainReplicaSync>(cfg, params, par);
}

}  // namespace moe
