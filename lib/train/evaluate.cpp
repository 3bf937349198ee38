#include "train/evaluate.h"

#include <cmath>
#include <sstream>

#include "common/error.h"

namespace moe {

torch::Tensor batch_inputs(const TokenBatch& b, const torch::Device& device) {
    return torch::from_blob(const_cast<int32_t*>(b.inputs.data()), {b.batch, b.seq_len}, torch::kInt32)
        .to(device, torch::kInt64);
}

torch::Tensor batch_targets(const TokenBatch& b, const torch::Device& device) {
    return torch::from_blob(const_cast<int32_t*>(b.targets.data()), {b.batch, b.seq_len}, torch::kInt32)
        .to(device, torch::kInt64);
}

EvalResult evaluate(MoeTransformer& model, DataSource& data, int64_t num_batches, int64_t batch_size,
                    Communicator* pipeline) {
    torch::NoGradGuard no_grad;
    const int stage = pipeline ? pipeline->rank() : 0, stages = pipeline ? pipeline->size() : 1;
    const bool first = stage == 0, last = stage == stages - 1;
    const int64_t L = model.config().n_layers, E = model.config().moe.num_experts;
    // Per layer: routed tokens per expert, then routed, dropped and "is an MoE layer here"; one
    // table so that the stages' parts add up with one sum. Index 0 of `sums` is the loss sum,
    // index 1 the token count.
    auto load_LC = torch::zeros({L, E + 3}, torch::kFloat64);
    auto sums = torch::zeros({2}, torch::kFloat64);
    for (int64_t i = 0; i < num_batches; ++i) {
        TokenBatch b = data.eval_batch(i, batch_size);
        torch::Tensor h;
        if (first) {
            h = model.embed(batch_inputs(b, model.device()));
        } else {
            h = torch::empty({b.batch, b.seq_len, model.config().d_model}, torch::TensorOptions(model.device()));
            pipeline->recv(h, stage - 1, int(i));
        }
        h = model.forward_layers(h);
        if (!last) {
            pipeline->send(h.contiguous(), stage + 1, int(i));
        } else {
            const int64_t n = b.batch * b.seq_len;
            sums[0] += MoeTransformer::cross_entropy(model.head(h), batch_targets(b, model.device())).item<double>() * double(n);
            sums[1] += double(n);
        }
        for (const auto& [layer, s] : model.last_moe_stats()) {
            auto row = load_LC[layer];
            row.narrow(0, 0, E) += s.routed_per_expert_E.to(torch::kCPU, torch::kFloat64);
            row[E] += double(s.num_routed);
            row[E + 1] += double(s.num_dropped);
            row[E + 2] = 1.0;
        }
    }
    if (pipeline && stages > 1) {
        pipeline->all_reduce(sums);
        pipeline->all_reduce(load_LC);
    }
    EvalResult r;
    r.tokens = int64_t(sums[1].item<double>());
    MOE_CHECK(r.tokens > 0, "evaluation over {} batches saw no tokens", num_batches);
    r.loss = sums[0].item<double>() / double(r.tokens);
    r.perplexity = std::exp(r.loss);
    if (data.tokens_are_bytes()) r.bits_per_byte = r.loss / std::log(2.0);
    for (int64_t layer = 0; layer < L; ++layer) {
        auto row = load_LC[layer];
        if (row[E + 2].item<double>() == 0) continue;   // a dense layer
        ExpertLoad l;
        l.layer = layer;
        const double total = row.narrow(0, 0, E).sum().item<double>();
        for (int64_t e = 0; e < E; ++e) l.share.push_back(total > 0 ? row[e].item<double>() / total : 0);
        const double routed = row[E].item<double>();
        l.dropped_fraction = routed > 0 ? row[E + 1].item<double>() / routed : 0;
        r.expert_load.push_back(std::move(l));
    }
    return r;
}

std::string format_expert_load(const std::vector<ExpertLoad>& load) {
    std::ostringstream s;
    if (load.empty()) return "no MoE layers\n";
    s << "layer";
    for (size_t e = 0; e < load[0].share.size(); ++e) s << fmt::format(" {:>6}", fmt::format("e{}", e));
    s << "  dropped\n";
    for (const auto& l : load) {
        s << fmt::format("{:>5}", l.layer);
        for (double v : l.share) s << fmt::format(" {:>6.3f}", v);
        s << fmt::format("  {:>7.4f}\n", l.dropped_fraction);
    }
    return s.str();
}

}  // namespace moe
