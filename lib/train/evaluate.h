// Held-out evaluation shared by the trainer and moe-eval: mean token loss over eval batches,
// perplexity, bits per byte (byte data), and the expert load of every MoE layer.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moe/transformer.h"
#include "parallel/communicator.h"
#include "data/data_source.h"
#include "record/run_record.h"   // ExpertLoad

namespace moe {

struct EvalResult {
    double loss = 0;                     // mean cross-entropy, nats per token
    double perplexity = 0;
    std::optional<double> bits_per_byte; // when tokens are bytes
    int64_t tokens = 0;
    std::vector<ExpertLoad> expert_load; // one per MoE layer
};

// `pipeline`: when `model` is one stage of a pipeline, the group of its stages (every stage calls
// this; activations flow forward between them and every stage gets the whole result).
EvalResult evaluate(MoeTransformer& model, DataSource& data, int64_t num_batches, int64_t batch_size,
                    Communicator* pipeline = nullptr);

// Tokens of a TokenBatch as int64 tensors [B, T] on `device`.
torch::Tensor batch_inputs(const TokenBatch& b, const torch::Device& device = torch::kCPU);
torch::Tensor batch_targets(const TokenBatch& b, const torch::Device& device = torch::kCPU);

// A fixed-width text table of the expert load (one row per layer), for logs and moe-eval.
std::string format_expert_load(const std::vector<ExpertLoad>& load);

}  // namespace moe
