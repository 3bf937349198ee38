#include "train/evaluate.h"

#include <cmath>
#include <sstream>

#include "common/error.h"

namespace moe {

torch::Tensor batch_inputs(const TokenBatch& b) {
    return torch::from_blob(const_cast<int32_t*>(b.inputs.data()), {b.batch, b.seq_len}, torch::kInt32)
        .to(torch::kInt64);
}

torch::Tensor batch_targets(const TokenBatch& b) {
    return torch::from_blob(const_cast<int32_t*>(b.targets.data()), {b.batch, b.seq_len}, torch::kInt32)
        .to(torch::kInt64);
}

EvalResult evaluate(MoeTransformer& model, DataSource& data, int64_t num_batches, int64_t batch_size) {
    torch::NoGradGuard no_grad;
    EvalResult r;
    double loss_sum = 0;
    std::map<int64_t, std::pair<torch::Tensor, std::pair<int64_t, int64_t>>> load;  // layer -> counts, (routed, dropped)
    for (int64_t i = 0; i < num_batches; ++i) {
        TokenBatch b = data.eval_batch(i, batch_size);
        auto logits = model.forward(batch_inputs(b));
        const int64_t n = b.batch * b.seq_len;
        loss_sum += MoeTransformer::cross_entropy(logits, batch_targets(b)).item<double>() * double(n);
        r.tokens += n;
        for (const auto& [layer, s] : model.last_moe_stats()) {
            auto& acc = load[layer];
            acc.first = acc.first.defined() ? acc.first + s.routed_per_expert_E : s.routed_per_expert_E.clone();
            acc.second.first += s.num_routed;
            acc.second.second += s.num_dropped;
        }
    }
    MOE_CHECK(r.tokens > 0, "evaluation over {} batches saw no tokens", num_batches);
    r.loss = loss_sum / double(r.tokens);
    r.perplexity = std::exp(r.loss);
    if (data.tokens_are_bytes()) r.bits_per_byte = r.loss / std::log(2.0);
    for (auto& [layer, acc] : load) {
        ExpertLoad l;
        l.layer = layer;
        auto counts = acc.first.to(torch::kFloat64);
        double total = counts.sum().item<double>();
        for (int64_t e = 0; e < counts.size(0); ++e) l.share.push_back(total > 0 ? counts[e].item<double>() / total : 0);
        l.dropped_fraction = acc.second.first > 0 ? double(acc.second.second) / double(acc.second.first) : 0;
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
