// Configuration of the model (section `model:`) and of its MoE layers (section `moe:`).
// Owned by lib/moe; parsed from YAML in lib/config/config_parse.cpp. Semantics follow
// Hugging Face Mixtral (DESIGN.md section 5).
#pragma once

#include <cstdint>
#include <string>

namespace moe {

enum class Routing { token_choice, expert_choice };
enum class AuxLossScope { local, global };

struct MoeConfig {
    int64_t num_experts = 8;          // E: routed experts per MoE layer
    int64_t top_k = 2;                // K: experts per token (token-choice routing)
    int64_t ffn_hidden = 256;         // F: intermediate size of one expert (Mixtral intermediate_size)
    int64_t shared_experts = 0;       // DeepSeekMoE-style always-on experts, each of size F
    int64_t first_dense_layers = 0;   // the first N layers use a dense SwiGLU MLP instead of experts
    int64_t dense_ffn_hidden = 0;     // dense MLP size; 0 = top_k * ffn_hidden (same active params)
    bool renormalize = true;          // renormalise the top-k weights to sum to 1 (Mixtral)
    double capacity_factor = 0.0;     // 0 = dropless; else capacity = ceil(cf * tokens * K / E)
    double aux_loss_coef = 0.01;      // Switch load-balancing loss E * sum_e f_e * P_e
    double z_loss_coef = 0.001;       // ST-MoE router z-loss mean(logsumexp(logits)^2)
    Routing routing = Routing::token_choice;
    AuxLossScope aux_loss_scope = AuxLossScope::local;  // global: f and P reduced over the expert group
};

struct ModelConfig {
    int64_t vocab_size = 256;   // V
    int64_t d_model = 128;      // D
    int64_t n_layers = 4;       // L
    int64_t n_heads = 4;        // H (query heads)
    int64_t n_kv_heads = 2;     // grouped-query attention: H % n_kv_heads == 0
    int64_t max_seq_len = 128;  // rotary table length; train.seq_len must not exceed it
    double rope_theta = 10000.0;
    double norm_eps = 1e-5;
    double init_std = 0.02;
    bool tie_embeddings = false;
    MoeConfig moe;

    int64_t head_dim() const { return d_model / n_heads; }
    bool layer_is_moe(int64_t layer) const { return layer >= moe.first_dense_layers; }
    int64_t dense_hidden() const { return moe.dense_ffn_hidden > 0 ? moe.dense_ffn_hidden : moe.top_k * moe.ffn_hidden; }
};

// Model FLOPs of one trained token (forward + backward) at sequence length S, the numerator of
// MFU: 6 x the matmul parameters a token passes through (attention projections, the router, its
// top_k experts and shared experts or the dense MLP, lm_head; not the embedding lookup) plus the
// causal attention scores and values, 6 x L x S x (n_heads x head_dim) (PaLM's 12 L S D, halved
// for the causal mask). Recomputation and routing overheads are not counted.
inline double model_flops_per_token(const ModelConfig& c, int64_t S) {
    const double D = double(c.d_model), A = double(c.n_heads * c.head_dim()), KV = double(c.n_kv_heads * c.head_dim());
    const double attention_params = D * A * 2 + D * KV * 2;   // q, o; k, v
    const double F = double(c.moe.ffn_hidden);
    double params = double(c.vocab_size) * D;                  // lm_head (tied or not, it is a matmul)
    for (int64_t l = 0; l < c.n_layers; ++l) {
        params += attention_params;
        if (c.layer_is_moe(l))
            params += double(c.moe.num_experts) * D + double(c.moe.top_k + c.moe.shared_experts) * 3 * D * F;
        else
            params += 3 * D * double(c.dense_hidden());
    }
    return 6 * params + 6 * double(c.n_layers) * double(S) * A;
}

}  // namespace moe
