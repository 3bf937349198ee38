// The Mixtral-style decoder: token embedding -> L x [RMSNorm -> GQA attention (+res) -> RMSNorm ->
// MoE or dense SwiGLU (+res)] -> final RMSNorm -> lm_head. A model object may hold only a slice
// of the layers (a pipeline stage) and only some experts (expert parallelism, via the dispatcher);
// parameter values never depend on the slice: each tensor (each expert slice) is initialised from
// the seed and its own Hugging Face name, so every layout starts from the same model.
//
//   moe::MoeTransformer model(cfg.model, std::make_shared<moe::LocalDispatcher>(E), /*seed=*/42);
//   auto logits_BSV = model.forward(tokens_BS);
//   auto loss = moe::MoeTransformer::cross_entropy(logits_BSV, targets_BS);
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "moe/expert_dispatcher.h"
#include "moe/layers.h"
#include "moe/model_config.h"
#include "moe/moe_layer.h"
#include "moe/parameter_store.h"
#include "moe/precision.h"

namespace moe {

// Which part of the model this object holds (a pipeline stage; the whole model by default).
struct ModelSlice {
    int64_t first_layer = 0;
    int64_t num_layers = -1;  // -1 = through the last layer
    bool has_embedding = true;
    bool has_head = true;
};

class MoeTransformer {
   public:
    // Parameters live on `device` (their values do not depend on it: initialised on the CPU from
    // the seed, then copied). `precision` bf16 runs embed-free stage pieces under autocast.
    MoeTransformer(const ModelConfig& cfg, std::shared_ptr<ExpertDispatcher> dispatcher, uint64_t seed,
                   ModelSlice slice = {}, torch::Device device = torch::kCPU, Precision precision = Precision::fp32);

    // Stage pieces. tokens_BS int64; hidden states [B, S, D]; logits [B, S, V].
    torch::Tensor embed(const torch::Tensor& tokens_BS) const;
    torch::Tensor forward_layers(torch::Tensor h_BSD);
    torch::Tensor head(const torch::Tensor& h_BSD) const;
    // All three (requires a slice holding the whole model).
    torch::Tensor forward(const torch::Tensor& tokens_BS);

    // Mean token cross-entropy, logits_BSV against targets_BS (computed in float32 whatever the logits' dtype).
    static torch::Tensor cross_entropy(const torch::Tensor& logits_BSV, const torch::Tensor& targets_BS);

    // Multiplies the injected aux/z loss gradients: the weight of the current micro-batch in the
    // step's loss (1 / micro_batches), so accumulated gradients equal those of the whole batch.
    void set_loss_scale(double scale) { loss_scale_ = scale; }

    ParameterStore& params() { return params_; }
    const ParameterStore& params() const { return params_; }
    const ModelConfig& config() const { return cfg_; }
    const ModelSlice& slice() const { return slice_; }
    torch::Device device() const { return device_; }
    Precision precision() const { return precision_; }
    ExpertDispatcher& dispatcher() { return *dispatcher_; }

    // Stats of this slice's MoE layers from the last forward_layers(), in layer order, with the
    // global layer index of each.
    const std::vector<std::pair<int64_t, MoeLayerStats>>& last_moe_stats() const { return last_stats_; }

   private:
    struct LayerParams {
        int64_t index = 0;  // global layer index
        bool is_moe = true;
        size_t input_norm = 0, q = 0, k = 0, v = 0, o = 0, post_norm = 0;
        size_t gate = 0, w1 = 0, w3 = 0, w2 = 0;                  // MoE
        bool has_shared = false;
        size_t shared_w1 = 0, shared_w3 = 0, shared_w2 = 0;       // MoE shared expert
        size_t mlp_gate = 0, mlp_up = 0, mlp_down = 0;            // dense layer
    };

    void declare_parameters();
    void initialise(uint64_t seed);
    torch::Tensor layer_forward(const LayerParams& lp, const torch::Tensor& h_BSD, MoeLayerStats* stats);
    const torch::Tensor& p(size_t i) const { return params_.get(i); }

    ModelConfig cfg_;
    ModelSlice slice_;
    torch::Device device_;
    Precision precision_;
    std::shared_ptr<ExpertDispatcher> dispatcher_;
    ParameterStore params_;
    std::vector<LayerParams> layers_;
    size_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;
    int64_t num_moe_layers_total_ = 0;
    double loss_scale_ = 1.0;
    RotaryTables rope_;
    std::vector<std::pair<int64_t, MoeLayerStats>> last_stats_;
};

}  // namespace moe
