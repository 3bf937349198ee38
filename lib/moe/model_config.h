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

}  // namespace moe
