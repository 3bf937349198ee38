// Token data sources: a synthetic Markov-mixture corpus with an exactly known entropy bound
// (the default), raw bytes of a text file (vocab 256), and llm.c / nanoGPT `.bin` token shards
// (256 x int32 header, magic 20240520, then uint16 tokens).
//
// Sampling is addressed by a global sample index so that data parallelism is a pure split:
// at position p, replica r of R with per-replica batch b reads samples p + r*b .. p + r*b + b - 1,
// and every replica advances p by b*R. So dp=2 with batch b reads exactly what one rank with
// batch 2b reads, and the position is one integer to checkpoint.
//
//   auto data = moe::make_data_source(cfg.data, /*seq_len=*/128, /*seed=*/42, /*replica=*/0, /*replicas=*/1);
//   moe::TokenBatch b = data->next_train_batch(8);   // b.inputs, b.targets: [8, 128] row-major
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/data_config.h"

namespace moe {

struct TokenBatch {
    int64_t batch = 0;             // B
    int64_t seq_len = 0;           // T
    std::vector<int32_t> inputs;   // [B, T] row-major
    std::vector<int32_t> targets;  // [B, T]: inputs shifted by one
};

struct DataPosition {
    uint64_t next_sample = 0;  // global index of the first sample of the next step
};

class DataSource {
   public:
    virtual ~DataSource() = default;

    virtual int64_t vocab_size() const = 0;
    // True when tokens are raw bytes (so eval can report bits per byte).
    virtual bool tokens_are_bytes() const = 0;
    virtual std::string describe() const = 0;

    // This replica's share of the next global batch; advances the position by batch * replicas.
    virtual TokenBatch next_train_batch(int64_t batch) = 0;
    // Held-out batch `index` (deterministic; the same for every call and every replica layout
    // when batch and index are the same). Eval covers the held-out split cyclically.
    virtual TokenBatch eval_batch(int64_t index, int64_t batch) = 0;

    virtual DataPosition position() const = 0;
    virtual void set_position(const DataPosition& pos) = 0;
    // Completed passes over the training split (0 for the synthetic corpus, which never repeats).
    virtual uint64_t epoch() const = 0;

    // Mean per-token loss (nats) of the Bayes-optimal predictor on eval batches 0..num_batches-1,
    // where the true generating process is known (synthetic corpus); nullopt otherwise.
    virtual std::optional<double> entropy_bound(int64_t num_batches, int64_t batch) const = 0;
};

// Throws DataError naming the file for missing, empty, truncated or wrong-magic files, and
// ConfigError for impossible settings (e.g. a file shorter than one sequence).
std::unique_ptr<DataSource> make_data_source(const DataConfig& cfg, int64_t seq_len, uint64_t seed,
                                             int64_t replica, int64_t replicas);

// The format of the data at `path` when data.source is not given: `bin` for a folder or glob of
// shards or a file that starts with the llm.c magic 20240520, otherwise `text`. Reads at most
// the first 4 bytes of a regular file.
DataFormat detect_data_format(const std::string& path);

}  // namespace moe
