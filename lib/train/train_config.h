// Configuration of data (`data:`), optimiser (`optim:`), the loop (`train:`) and checkpoints
// (`checkpoint:`). Owned by lib/train.
#pragma once

#include <cstdint>
#include <string>

namespace moe {

enum class DataFormat { synthetic, text, bin };  // (the class DataSource is in data.h)

struct SyntheticDataConfig {
    int64_t vocab = 64;        // tokens 0..vocab-1
    int64_t num_sources = 8;   // Markov sources; each document is drawn from one
    int64_t branching = 4;     // successors with non-zero probability per state
    double concentration = 1.0;  // Dirichlet concentration of each row over its successors
    uint64_t seed = 1234;      // fixes the sources themselves
};

struct DataConfig {
    DataFormat source = DataFormat::synthetic;
    std::string path;          // text file, or .bin shard / directory / glob of shards
    std::string eval_path;     // optional separate held-out file(s); else eval_fraction of path
    double eval_fraction = 0.05;
    SyntheticDataConfig synthetic;
};

struct OptimConfig {
    double lr = 3e-3;             // peak learning rate
    double min_lr_ratio = 0.1;    // cosine decays to lr * min_lr_ratio
    int64_t warmup_steps = 20;    // linear warm-up
    double weight_decay = 0.1;    // decoupled (AdamW); not applied to norms
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double grad_clip = 1.0;       // global-norm clipping; 0 = off
};

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

struct CheckpointConfig {
    int64_t every = 0;            // save every N steps; 0 = only at the end and on signals
    std::string dir;              // empty = <run-dir>/checkpoints (or /data/checkpoints/<run-id> on Fly)
    int64_t keep = 2;             // complete checkpoints kept (>= 2)
    bool async = false;           // write from a background thread after a staging copy
    bool save_final = true;
};

}  // namespace moe
