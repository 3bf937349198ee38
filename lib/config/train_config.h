// Configuration of the loop (`train:`) and of checkpoints (`checkpoint:`). They live here rather
// than beside lib/train and lib/checkpoint because lib/checkpoint reads whole Configs (moe-eval
// rebuilds a model from a manifest) and nothing below lib/train may include train/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
    std::string run_dir = "runs"; // records go to <run_dir>/<run_id>/
    std::string run_id;           // empty = generated from time and config hash
};

// Injected heterogeneity for tests and benchmarks (`simulate:`), never on by default: model
// replica i sleeps (slowdown[i] - 1) x its compute time after every step, in every mode, so a
// synchronous baseline meets the same straggler. Empty: no replica is slowed.
struct SimulateConfig {
    std::vector<double> slowdown;
};

struct CheckpointConfig {
    int64_t every = 0;            // save every N steps; 0 = only at the end and on signals
    std::string dir;              // empty = <run-dir>/checkpoints (or /data/checkpoints/<run-id> on Fly)
    int64_t keep = 2;             // complete checkpoints kept (>= 2)
    bool async = false;           // write from a background thread after a staging copy
    bool save_final = true;
};

}  // namespace moe
