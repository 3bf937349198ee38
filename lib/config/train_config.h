// Configuration of the loop (`train:`) and of checkpoints (`checkpoint:`). They live here rather
// than beside lib/train and lib/checkpoint because lib/checkpoint reads whole Configs (moe-eval
// rebuilds a model from a manifest) and nothing below lib/train may include train/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/precision.h"
#include "parallel/device.h"

namespace moe {

struct TrainConfig {
    int64_t steps = 300;
    int64_t batch_size = 8;       // sequences per step per data-parallel replica
    int64_t micro_batches = 1;    // gradient accumulation / pipeline micro-batches
    int64_t seq_len = 128;        // T
    uint64_t seed = 42;           // parameter init and data order
    int64_t eval_every = 100;     // 0 = only at the end
    int64_t eval_batches = 8;
    int64_t log_every = 10;
    int64_t threads = 0;          // intra-op threads per rank; 0 = cores on host / ranks on host
    int64_t max_bad_steps = 5;    // abort after this many consecutive NaN/Inf losses
    DeviceKind device = DeviceKind::auto_detect;   // auto: the CUDA device of this rank where there is one
    Precision precision = Precision::fp32;          // bf16: autocast (moe/precision.h)
    std::string run_dir = "runs"; // records go to <run_dir>/<run_id>/
    std::string run_id;           // empty = generated from time and config hash
};

// Injected heterogeneity for tests and benchmarks (`simulate:`), never on by default: model
// replica i sleeps (slowdown[i] - 1) x its compute time after every step, in every mode, so a
// synchronous baseline meets the same straggler. Empty: no replica is slowed.
struct SimulateConfig {
    std::vector<double> slowdown;
};

// checkpoint.storage: where checkpoints live. shared: one file system every rank sees (the first
// expert group writes, rank 0 commits); per_host: each host's own disk (a Fly volume, node-local
// NVMe): every rank writes its own shard there and each host commits a manifest of its own;
// auto: per_host on Fly.io (FLY_APP_NAME set), else shared.
enum class CheckpointStorage { auto_detect, shared, per_host };

struct CheckpointConfig {
    int64_t every = 0;            // save every N steps; 0 = only at the end and on signals
    std::string dir;              // empty = <run-dir>/checkpoints (or /data/checkpoints/<run-id> on Fly)
    int64_t keep = 2;             // complete checkpoints kept (>= 2)
    bool async = false;           // write (and commit) from a background thread after a staging copy
    CheckpointStorage storage = CheckpointStorage::auto_detect;
    bool save_final = true;
};

}  // namespace moe
