// A model rebuilt from a checkpoint alone: the manifest carries the resolved config, so moe-eval
// needs nothing but the checkpoint directory.
//
//   moe::LoadedCheckpoint ck = moe::load_model_checkpoint("runs/a/checkpoints");  // newest valid
//   auto logits = ck.model->forward(tokens);
#pragma once

#include <memory>
#include <string>

#include "moe/transformer.h"
#include "checkpoint/checkpoint.h"
#include "config/config.h"

namespace moe {

// `path` is a step directory (with manifest.yaml), or a checkpoint root, whose newest valid
// checkpoint is taken (newer ones that fail verification are reported on stderr and skipped).
// Throws CheckpointError naming the path when nothing there verifies.
std::string resolve_checkpoint_dir(const std::string& path);

struct LoadedCheckpoint {
    std::string dir;
    Config config;                          // from the manifest
    std::unique_ptr<MoeTransformer> model;  // whole model, parameters loaded
    TrainingState state;
};

// Resolves, verifies (size and SHA-256 of every shard) and loads a checkpoint, merging the expert
// shards of a multi-rank one into the whole model.
// `path`: a step folder or a checkpoint root; with per-host storage, one per host, comma-separated
// ("a/checkpoints,b/checkpoints"): the shards of one step spread over the hosts.
LoadedCheckpoint load_model_checkpoint(const std::string& path);

}  // namespace moe
