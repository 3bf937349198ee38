// Export to Hugging Face Mixtral layout: model.safetensors (float32) + config.json, loadable by
// transformers' MixtralForCausalLM. Our tensor names already are HF names (parameter_store.h).
//
//   moe::export_hf_mixtral(ck.config.model, ck.model->params(), "out/");
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "moe/model_config.h"
#include "moe/parameter_store.h"

namespace moe {

// The safetensors format: 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian data. Written atomically.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors);

// config.json for MixtralForCausalLM. Throws ConfigError naming the key for features Mixtral
// cannot express (shared experts, dense layers, expert-choice routing, no renormalisation).
std::string hf_mixtral_config_json(const ModelConfig& cfg);

// Writes <out_dir>/model.safetensors and <out_dir>/config.json.
void export_hf_mixtral(const ModelConfig& cfg, const ParameterStore& params, const std::string& out_dir);

}  // namespace moe
