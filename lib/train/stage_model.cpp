#include "train/stage_model.h"

#include "parallel/group_stats_dispatcher.h"
#include "parallel/stage_layers.h"

namespace moe {

StageModel build_stage_model(const Config& cfg, ParallelContext& par) {
    const Mesh& mesh = par.mesh;
    StageModel sm;
    std::shared_ptr<ExpertDispatcher> dispatcher;
    if (mesh.ep > 1) {
        sm.a2a = std::make_shared<AllToAllDispatcher>(*par.expert, cfg.model.moe.num_experts);
        dispatcher = sm.a2a;
    } else {
        dispatcher = std::make_shared<LocalDispatcher>(cfg.model.moe.num_experts);
    }
    const bool global_stats =
        cfg.model.moe.aux_loss_scope == AuxLossScope::global && (cfg.async.enabled ? mesh.ep > 1 : mesh.dp > 1);
    // Global aux-loss scope: router statistics summed over all replicas (the global batch); in
    // asynchronous mode over the model replica's expert group only, since nothing may couple
    // model replicas every step.
    if (global_stats)
        dispatcher = std::make_shared<GroupStatsDispatcher>(dispatcher, cfg.async.enabled ? *par.expert : *par.data);
    sm.all_ranks_evaluate = mesh.ep > 1 || mesh.pp > 1 || global_stats;

    const StageLayers layers = stage_layers(cfg.model.n_layers, mesh.pp, cfg.parallel.partition, mesh.stage);
    ModelSlice slice;
    slice.first_layer = layers.first;
    slice.num_layers = layers.count;
    slice.has_embedding = mesh.stage == 0;
    slice.has_head = mesh.stage == mesh.pp - 1;
    sm.model = std::make_unique<MoeTransformer>(cfg.model, dispatcher, cfg.train.seed, slice, par.device,
                                                cfg.train.precision);
    return sm;
}

}  // namespace moe
