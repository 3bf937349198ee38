#include "moe/transformer.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/fnv1a.h"

namespace moe {

namespace {

uint64_t mix_seed(uint64_t seed, const std::string& name) {
    uint64_t z = seed ^ fnv1a(name, kFnv1aLegacyOffset);  // splitmix64 finaliser
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Drawn on the CPU whatever t's device, so every device starts from the same values.
void init_normal(torch::Tensor t, double std, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    if (t.is_cpu()) {
        t.normal_(0.0, std, gen);
        return;
    }
    auto staged = torch::empty(t.sizes(), torch::kFloat32);
    staged.normal_(0.0, std, gen);
    t.copy_(staged);
}

}  // namespace

MoeTransformer::MoeTransformer(const ModelConfig& cfg, std::shared_ptr<ExpertDispatcher> dispatcher, uint64_t seed,
                               ModelSlice slice, torch::Device device, Precision precision)
    : cfg_(cfg), slice_(slice), device_(device), precision_(precision), dispatcher_(std::move(dispatcher)) {
    if (slice_.num_layers < 0) slice_.num_layers = cfg_.n_layers - slice_.first_layer;
    MOE_CHECK(slice_.first_layer >= 0 && slice_.first_layer + slice_.num_layers <= cfg_.n_layers,
              "model slice [{}, {}) outside {} layers", slice_.first_layer, slice_.first_layer + slice_.num_layers,
              cfg_.n_layers);
    MOE_CHECK(!cfg_.tie_embeddings || (slice_.has_embedding && slice_.has_head),
              "tied embeddings need the embedding and the head on the same stage");
    for (int64_t l = 0; l < cfg_.n_layers; ++l) num_moe_layers_total_ += cfg_.layer_is_moe(l) ? 1 : 0;
    declare_parameters();
    params_.finalize(device_);
    initialise(seed);
    rope_ = RotaryTables::make(cfg_.max_seq_len, cfg_.head_dim(), cfg_.rope_theta);
    rope_.cos = rope_.cos.to(device_);
    rope_.sin = rope_.sin.to(device_);
}

void MoeTransformer::declare_parameters() {
    const int64_t D = cfg_.d_model, Hd = cfg_.head_dim(), H = cfg_.n_heads, G = cfg_.n_kv_heads;
    const int64_t E = cfg_.moe.num_experts, F = cfg_.moe.ffn_hidden;
    auto dense = [&](std::string name, std::vector<int64_t> shape, bool decay = true) {
        return params_.declare(std::move(name), std::move(shape), ParamGroup::dense, decay);
    };
    if (slice_.has_embedding) embed_ = dense("model.embed_tokens.weight", {cfg_.vocab_size, D});
    for (int64_t l = slice_.first_layer; l < slice_.first_layer + slice_.num_layers; ++l) {
        LayerParams lp;
        lp.index = l;
        lp.is_moe = cfg_.layer_is_moe(l);
        const std::string pre = fmt::format("model.layers.{}.", l);
        lp.input_norm = dense(pre + "input_layernorm.weight", {D}, false);
        lp.q = dense(pre + "self_attn.q_proj.weight", {H * Hd, D});
        lp.k = dense(pre + "self_attn.k_proj.weight", {G * Hd, D});
        lp.v = dense(pre + "self_attn.v_proj.weight", {G * Hd, D});
        lp.o = dense(pre + "self_attn.o_proj.weight", {D, H * Hd});
        lp.post_norm = dense(pre + "post_attention_layernorm.weight", {D}, false);
        if (lp.is_moe) {
            const std::string moe = pre + "block_sparse_moe.";
            const int64_t first = dispatcher_->first_local_expert(), n = dispatcher_->num_local_experts();
            lp.gate = dense(moe + "gate.weight", {E, D});
            auto expert = [&](const char* w, std::vector<int64_t> shape) {
                return params_.declare(moe + "experts.{}." + w + ".weight", std::move(shape), ParamGroup::expert, true,
                                       first, n);
            };
            lp.w1 = expert("w1", {n, F, D});
            lp.w3 = expert("w3", {n, F, D});
            lp.w2 = expert("w2", {n, D, F});
            if (cfg_.moe.shared_experts > 0) {
                const int64_t Fs = F * cfg_.moe.shared_experts;
                lp.has_shared = true;
                lp.shared_w1 = dense(moe + "shared_experts.w1.weight", {Fs, D});
                lp.shared_w3 = dense(moe + "shared_experts.w3.weight", {Fs, D});
                lp.shared_w2 = dense(moe + "shared_experts.w2.weight", {D, Fs});
            }
        } else {
            const int64_t Fd = cfg_.dense_hidden();
            lp.mlp_gate = dense(pre + "mlp.gate_proj.weight", {Fd, D});
            lp.mlp_up = dense(pre + "mlp.up_proj.weight", {Fd, D});
            lp.mlp_down = dense(pre + "mlp.down_proj.weight", {D, Fd});
        }
        layers_.push_back(lp);
    }
    if (slice_.has_head) {
        final_norm_ = dense("model.norm.weight", {D}, false);
        if (!cfg_.tie_embeddings) lm_head_ = dense("lm_head.weight", {cfg_.vocab_size, D});
    }
}

void MoeTransformer::initialise(uint64_t seed) {
    torch::NoGradGuard no_grad;
    for (auto& e : params_.entries()) {
        if (!e.weight_decay) {  // norms start at 1
            e.value.fill_(1.0);
        } else if (e.stacked()) {
            for (int64_t j = 0; j < e.num_experts; ++j) init_normal(e.value[j], cfg_.init_std, mix_seed(seed, e.slice_name(j)));
        } else {
            init_normal(e.value, cfg_.init_std, mix_seed(seed, e.name));
        }
    }
}

torch::Tensor MoeTransformer::embed(const torch::Tensor& tokens_BS) const {
    MOE_CHECK(slice_.has_embedding, "this model slice holds no embedding");
    return torch::embedding(p(embed_), tokens_BS);
}

torch::Tensor MoeTransformer::layer_forward(const LayerParams& lp, const torch::Tensor& h_BSD, MoeLayerStats* stats) {
    const double eps = cfg_.norm_eps;
    AttentionWeights aw{p(lp.q), p(lp.k), p(lp.v), p(lp.o)};
    auto h = h_BSD + attention(rms_norm(h_BSD, p(lp.input_norm), eps), aw, cfg_.n_heads, cfg_.n_kv_heads, rope_);
    auto x_BSD = rms_norm(h, p(lp.post_norm), eps);
    const auto B = x_BSD.size(0), S = x_BSD.size(1), D = x_BSD.size(2);
    auto x_TD = x_BSD.reshape({B * S, D});
    if (!lp.is_moe) return h + swiglu(x_TD, p(lp.mlp_gate), p(lp.mlp_up), p(lp.mlp_down)).view({B, S, D});

    MoeWeights w;
    w.gate = p(lp.gate);
    w.w1 = p(lp.w1);
    w.w3 = p(lp.w3);
    w.w2 = p(lp.w2);
    if (lp.has_shared) {
        w.shared_w1 = p(lp.shared_w1);
        w.shared_w3 = p(lp.shared_w3);
        w.shared_w2 = p(lp.shared_w2);
    }
    // The losses are averaged over the model's MoE layers (one coefficient for the whole model).
    const double per_layer = loss_scale_ / double(num_moe_layers_total_);
    MoeLayerOutput out = moe_forward(x_TD, w, cfg_.moe, *dispatcher_, cfg_.moe.aux_loss_coef * per_layer,
                                     cfg_.moe.z_loss_coef * per_layer);
    *stats = std::move(out.stats);
    return h + out.out_TD.view({B, S, D});
}

torch::Tensor MoeTransformer::forward_layers(torch::Tensor h_BSD) {
    MOE_CHECK(h_BSD.size(1) <= cfg_.max_seq_len, "sequence length {} exceeds model.max_seq_len {}", h_BSD.size(1),
              cfg_.max_seq_len);
    AutocastScope autocast(device_.type(), precision_);
    last_stats_.clear();
    for (const auto& lp : layers_) {
        MoeLayerStats stats;
        h_BSD = layer_forward(lp, h_BSD, &stats);
        if (lp.is_moe) last_stats_.emplace_back(lp.index, std::move(stats));
    }
    return h_BSD;
}

torch::Tensor MoeTransformer::head(const torch::Tensor& h_BSD) const {
    MOE_CHECK(slice_.has_head, "this model slice holds no head");
    AutocastScope autocast(device_.type(), precision_);
    auto x = rms_norm(h_BSD, p(final_norm_), cfg_.norm_eps);
    return torch::matmul(x, (cfg_.tie_embeddings ? p(embed_) : p(lm_head_)).t());
}

torch::Tensor MoeTransformer::forward(const torch::Tensor& tokens_BS) { return head(forward_layers(embed(tokens_BS))); }

torch::Tensor MoeTransformer::cross_entropy(const torch::Tensor& logits_BSV, const torch::Tensor& targets_BS) {
    const auto V = logits_BSV.size(-1);
    return torch::nn::functional::cross_entropy(logits_BSV.reshape({-1, V}).to(torch::kFloat32), targets_BS.reshape({-1}));
}

}  // namespace moe
