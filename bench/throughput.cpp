// Training throughput (tokens/s of forward + backward + AdamW) of the MoE model, of a dense
// model with the same active parameters (every layer a SwiGLU of width top_k * ffn_hidden), and of
// the MoE model in bf16 autocast (train.precision: bf16), on random tokens, measured alternately
// in the same process so machine noise hits all alike.
//
//   bench_throughput --steps 20 --threads 1
//   bench_throughput --json     # one line of JSON for scripts (bench/throughput.sh)
//   bench_throughput --only moe # one contender (for a profiler: perf record -g bench_throughput --only moe)
//   bench_throughput --only moe --trace t.json   # + 5 steps under libtorch's op profiler (chrome://tracing)
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "moe/transformer.h"
#include "optim/optimizer.h"
#include "train/compute_threads.h"

using namespace moe;

namespace {

struct Shape {
    int64_t batch = 8, seq = 128;
};

// Seconds per training step, median over `steps` after `warmup` steps; with a `trace` file, 5 more
// steps run under libtorch's operator profiler, written there as a chrome://tracing file.
double time_steps(const ModelConfig& cfg, const Shape& shape, int warmup, int steps, Precision precision,
                  const std::string& trace = "") {
    MoeTransformer model(cfg, std::make_shared<LocalDispatcher>(cfg.moe.num_experts), 1, {}, torch::kCPU, precision);
    OptimConfig ocfg;
    Optimizer opt(model.params(), ocfg);
    auto gen = at::detail::createCPUGenerator(7);
    std::vector<double> times;
    std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
    for (int i = 0; i < warmup + steps + (trace.empty() ? 0 : 5); ++i) {
        if (i == warmup + steps) profile = std::make_unique<torch::autograd::profiler::RecordProfile>(trace);
        auto tokens = torch::randint(cfg.vocab_size, {shape.batch, shape.seq + 1}, gen, torch::kInt64);
        auto t0 = std::chrono::steady_clock::now();
        model.params().zero_grads();
        auto logits = model.forward(tokens.narrow(1, 0, shape.seq));
        auto loss = MoeTransformer::cross_entropy(logits, tokens.narrow(1, 1, shape.seq));
        loss.backward();
        opt.step(1e-3);
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (i >= warmup && i < warmup + steps) times.push_back(dt);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"MoE vs dense training throughput"};
    int steps = 20, warmup = 3, threads = 1;
    bool json = false, keep_memory = true;
    std::string only = "all", trace;
    Shape shape;
    ModelConfig cfg;  // defaults: 4 layers, d 128, 8 experts top-2, F 256, vocab 256
    app.add_option("--steps", steps);
    app.add_option("--warmup", warmup);
    app.add_option("--threads", threads);
    app.add_option("--keep-freed-memory", keep_memory, "glibc keeps freed memory (moe-train's setting; false: defaults)");
    app.add_option("--batch", shape.batch);
    app.add_option("--seq", shape.seq);
    app.add_option("--layers", cfg.n_layers);
    app.add_option("--d-model", cfg.d_model);
    app.add_option("--experts", cfg.moe.num_experts);
    app.add_option("--top-k", cfg.moe.top_k);
    app.add_flag("--json", json);
    app.add_option("--only", only, "time one contender only")->check(CLI::IsMember({"all", "moe", "dense", "bf16"}));
    app.add_option("--trace", trace, "with --only: its last round's extra 5 steps profiled into this file");
    CLI11_PARSE(app, argc, argv);
    if (!trace.empty() && only == "all") {
        fmt::print(stderr, "bench_throughput: --trace needs --only moe|dense|bf16\n");
        return 2;
    }
    moe::set_compute_threads(threads);
    if (keep_memory) moe::keep_freed_memory();  // as moe-train does
    cfg.max_seq_len = std::max(cfg.max_seq_len, shape.seq);

    ModelConfig dense = cfg;
    dense.moe.first_dense_layers = cfg.n_layers;  // every layer dense, width top_k * F
    // Alternate the two models in rounds so drifts in machine speed hit both.
    const int rounds = 3;
    std::vector<double> moe_t, dense_t, bf16_t;
    const auto timed = [&](const char* name) { return only == "all" || only == name; };
    for (int r = 0; r < rounds; ++r) {
        const std::string round_trace = r == rounds - 1 ? trace : "";
        moe_t.push_back(timed("moe") ? time_steps(cfg, shape, warmup, steps, Precision::fp32, round_trace) : 0.0);
        dense_t.push_back(timed("dense") ? time_steps(dense, shape, warmup, steps, Precision::fp32, round_trace) : 0.0);
        bf16_t.push_back(timed("bf16") ? time_steps(cfg, shape, warmup, steps, Precision::bf16, round_trace) : 0.0);
    }
    std::sort(moe_t.begin(), moe_t.end());
    std::sort(dense_t.begin(), dense_t.end());
    std::sort(bf16_t.begin(), bf16_t.end());
    const double tokens = double(shape.batch * shape.seq);
    const double moe_tps = tokens / moe_t[rounds / 2], dense_tps = tokens / dense_t[rounds / 2];
    const double bf16_tps = tokens / bf16_t[rounds / 2];
    // A contender left out (--only) shows as null (JSON) or "-".
    const auto num = [&](double v, const char* spec) {
        return std::isfinite(v) && v > 0 ? fmt::format(fmt::runtime(spec), v) : std::string(json ? "null" : "-");
    };
    if (json) {
        fmt::print("{{\"moe_tokens_per_s\": {}, \"dense_tokens_per_s\": {}, \"moe_over_dense\": {}, "
                   "\"moe_bf16_tokens_per_s\": {}, \"bf16_over_fp32\": {}}}\n",
                   num(moe_tps, "{:.1f}"), num(dense_tps, "{:.1f}"), num(moe_tps / dense_tps, "{:.3f}"),
                   num(bf16_tps, "{:.1f}"), num(bf16_tps / moe_tps, "{:.3f}"));
    } else {
        fmt::print("model: {} layers, d_model {}, {} experts top-{}, F {}; batch {}x{}, {} thread(s)\n", cfg.n_layers,
                   cfg.d_model, cfg.moe.num_experts, cfg.moe.top_k, cfg.moe.ffn_hidden, shape.batch, shape.seq, threads);
        fmt::print("MoE   : {} tokens/s\n", num(moe_tps, "{:8.1f}"));
        fmt::print("dense : {} tokens/s (same active parameters)\n", num(dense_tps, "{:8.1f}"));
        fmt::print("MoE / dense throughput ratio: {}\n", num(moe_tps / dense_tps, "{:.3f}"));
        fmt::print("MoE, bf16 autocast: {} tokens/s; bf16 / fp32: {}\n", num(bf16_tps, "{:8.1f}"),
                   num(bf16_tps / moe_tps, "{:.3f}"));
    }
    return 0;
}
