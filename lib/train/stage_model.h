// This rank's part of the model: the layers of its pipeline stage, with the expert dispatcher the
// layout calls for (local experts, the all-to-all over the expert group, and the global router
// statistics over the data group when the aux loss is global).
//
//   StageModel sm = build_stage_model(cfg, *par);
//   sm.model->forward(...);   // sm.a2a is set under expert parallelism (its stats per step)
#pragma once

#include <memory>

#include "config/config.h"
#include "moe/transformer.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/parallel_context.h"

namespace moe {

struct StageModel {
    std::unique_ptr<MoeTransformer> model;
    std::shared_ptr<AllToAllDispatcher> a2a;   // set under expert parallelism
    // The forward pass communicates (expert exchanges, pipeline stages, global router
    // statistics), so every rank takes part in evaluation; otherwise rank 0 evaluates alone.
    bool all_ranks_evaluate = false;
};

StageModel build_stage_model(const Config& cfg, ParallelContext& par);

}  // namespace moe
