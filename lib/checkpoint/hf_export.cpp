#include "checkpoint/hf_export.h"

#include <filesystem>

#include "common/error.h"
#include "checkpoint/checkpoint.h"
#include "common/file_io.h"

namespace moe {

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
    std::string header = "{";
    int64_t offset = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& [name, t] = tensors[i];
        if (t.scalar_type() != torch::kFloat32) throw Error(fmt::format("{}: only float32 tensors are exported", name));
        const int64_t bytes = t.numel() * 4;
        header += fmt::format("{}\"{}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", i ? "," : "",
                              name, fmt::join(t.sizes(), ","), offset, offset + bytes);
        offset += bytes;
    }
    header += "}";
    header.append((8 - header.size() % 8) % 8, ' ');   // data starts 8-byte aligned
    std::string content;
    content.reserve(8 + header.size() + size_t(offset));
    const uint64_t n = header.size();
    for (int b = 0; b < 8; ++b) content.push_back(char((n >> (8 * b)) & 0xff));   // little-endian
    content += header;
    for (const auto& [name, t] : tensors) {
        auto c = t.contiguous();
        content.append(reinterpret_cast<const char*>(c.data_ptr<float>()), size_t(c.numel()) * 4);
    }
    write_file_atomically(path, content);
}

std::string hf_mixtral_config_json(const ModelConfig& cfg) {
    const MoeConfig& m = cfg.moe;
    auto refuse = [](const char* key, const std::string& why) {
        throw ConfigError(fmt::format("{}: {}; Hugging Face Mixtral cannot express it, so the model cannot be exported",
                                      key, why));
    };
    if (m.shared_experts > 0) refuse("moe.shared_experts", fmt::format("{} shared experts", m.shared_experts));
    if (m.first_dense_layers > 0) refuse("moe.first_dense_layers", fmt::format("{} dense layers", m.first_dense_layers));
    if (m.routing != Routing::token_choice) refuse("moe.routing", "expert-choice routing");
    if (!m.renormalize) refuse("moe.renormalize", "top-k weights are not renormalised");
    return fmt::format(
        "{{\n"
        "  \"architectures\": [\"MixtralForCausalLM\"],\n"
        "  \"model_type\": \"mixtral\",\n"
        "  \"torch_dtype\": \"float32\",\n"
        "  \"vocab_size\": {},\n"
        "  \"hidden_size\": {},\n"
        "  \"intermediate_size\": {},\n"
        "  \"num_hidden_layers\": {},\n"
        "  \"num_attention_heads\": {},\n"
        "  \"num_key_value_heads\": {},\n"
        "  \"head_dim\": {},\n"
        "  \"hidden_act\": \"silu\",\n"
        "  \"max_position_embeddings\": {},\n"
        "  \"rope_theta\": {},\n"
        "  \"rms_norm_eps\": {},\n"
        "  \"initializer_range\": {},\n"
        "  \"tie_word_embeddings\": {},\n"
        "  \"num_local_experts\": {},\n"
        "  \"num_experts_per_tok\": {},\n"
        "  \"router_aux_loss_coef\": {},\n"
        "  \"output_router_logits\": false,\n"
        "  \"attention_dropout\": 0.0,\n"
        "  \"sliding_window\": null,\n"
        "  \"use_cache\": true\n"
        "}}\n",
        cfg.vocab_size, cfg.d_model, m.ffn_hidden, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim(),
        cfg.max_seq_len, cfg.rope_theta, cfg.norm_eps, cfg.init_std, cfg.tie_embeddings ? "true" : "false",
        m.num_experts, m.top_k, m.aux_loss_coef);
}

void export_hf_mixtral(const ModelConfig& cfg, const ParameterStore& params, const std::string& out_dir) {
    const std::string config_json = hf_mixtral_config_json(cfg);   // refuses before writing anything
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    torch::NoGradGuard no_grad;
    for (const auto& slot : tensor_slots(params)) {
        tensors.emplace_back(slot.name, slot_tensor(slot, slot.entry->value).detach().contiguous());
    }
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) throw Error(fmt::format("{}: cannot create: {}", out_dir, ec.message()));
    write_safetensors(out_dir + "/model.safetensors", tensors);
    write_file_atomically(out_dir + "/config.json", config_json);
}

}  // namespace moe
