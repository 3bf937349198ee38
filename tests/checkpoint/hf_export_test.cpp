// moe-eval's export: the safetensors writer and the Hugging Face Mixtral config
// (lib/checkpoint/hf_export.cpp).
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>

#include "common/error.h"
#include "moe/transformer.h"
#include "temp_dir.h"
#include "common/file_io.h"
#include "checkpoint/hf_export.h"

using namespace moe;
using moe::test::TempDir;

TEST_CASE("safetensors: little-endian header length, aligned JSON header, raw float32 data at the offsets") {
    TempDir dir("moe_export_test");
    auto a = torch::arange(6, torch::kFloat32).view({2, 3});
    auto b = torch::tensor({-1.5f});
    write_safetensors(dir.path("t.safetensors"), {{"a.weight", a}, {"b", b}});
    const std::string bytes = read_file(dir.path("t.safetensors"));
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
    CHECK(n % 8 == 0);
    const std::string header = bytes.substr(8, n);
    CHECK(header.find(R"("a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})") != std::string::npos);
    CHECK(header.find(R"("b":{"dtype":"F32","shape":[1],"data_offsets":[24,28]})") != std::string::npos);
    REQUIRE(bytes.size() == 8 + n + 28);
    float got[7];
    std::memcpy(got, bytes.data() + 8 + n, sizeof got);
    for (int i = 0; i < 6; ++i) CHECK(got[i] == float(i));
    CHECK(got[6] == -1.5f);
}

TEST_CASE("export writes config.json for MixtralForCausalLM and one tensor per expert") {
    TempDir dir("moe_export_test");
    ModelConfig cfg;
    cfg.vocab_size = 32;
    cfg.d_model = 16;
    cfg.n_layers = 1;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 1;
    cfg.moe.num_experts = 4;
    cfg.moe.ffn_hidden = 8;
    MoeTransformer model(cfg, std::make_shared<LocalDispatcher>(4), 1);
    export_hf_mixtral(cfg, model.params(), dir.path("out"));
    const std::string json = read_file(dir.path("out/config.json"));
    for (const char* field : {R"("model_type": "mixtral")", R"("hidden_size": 16)", R"("intermediate_size": 8)",
                              R"("num_local_experts": 4)", R"("num_experts_per_tok": 2)", R"("num_key_value_heads": 1)",
                              R"("rms_norm_eps": 1e-05)"})
        CHECK_MESSAGE(json.find(field) != std::string::npos, field);
    const std::string st = read_file(dir.path("out/model.safetensors"));
    CHECK(st.find("model.layers.0.block_sparse_moe.experts.3.w2.weight") != std::string::npos);
    CHECK(st.find("lm_head.weight") != std::string::npos);
}

TEST_CASE("export refuses what Mixtral cannot express, naming the key, and writes nothing") {
    TempDir dir("moe_export_test");
    ModelConfig cfg;
    cfg.moe.shared_experts = 1;
    CHECK_THROWS_WITH_AS(hf_mixtral_config_json(cfg), doctest::Contains("moe.shared_experts"), ConfigError);
    cfg.moe.shared_experts = 0;
    cfg.moe.routing = Routing::expert_choice;
    CHECK_THROWS_WITH_AS(hf_mixtral_config_json(cfg), doctest::Contains("moe.routing"), ConfigError);
    cfg.moe.routing = Routing::token_choice;
    cfg.moe.renormalize = false;
    MoeTransformer model(cfg, std::make_shared<LocalDispatcher>(cfg.moe.num_experts), 1);
    CHECK_THROWS_WITH_AS(export_hf_mixtral(cfg, model.params(), dir.path("out")), doctest::Contains("moe.renormalize"),
                         ConfigError);
    CHECK(!std::filesystem::exists(dir.path("out")));
}
