// Checkpoint save speed: a ~100M-parameter MoE model (parameters + AdamW moments: ~1.2 GB per
// shard) saved with the full commit protocol (staging copy, HDF5 image, write + fsync, SHA-256,
// manifest, rename, LATEST), as bytes per second; and the training-loop stall of an async save
// against the staging copy alone. bench/checkpoint.sh compares the speed with `dd conv=fsync`
// on the same disk in the same run.
//
//   bench_checkpoint --dir /tmp/ckbench --rounds 3 [--json]
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "moe/transformer.h"
#include "optim/optimizer.h"
#include "checkpoint/checkpoint.h"

using namespace moe;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"checkpoint save throughput and async stall"};
    std::string dir = "/tmp/moe_checkpoint_bench";
    int rounds = 3;
    bool json = false;
    ModelConfig cfg;
    cfg.vocab_size = 256;
    cfg.d_model = 512;
    cfg.n_layers = 8;
    cfg.n_heads = 8;
    cfg.n_kv_heads = 4;
    cfg.moe.num_experts = 8;
    cfg.moe.ffn_hidden = 1024;
    app.add_option("--dir", dir, "where to write (the disk under test)");
    app.add_option("--rounds", rounds);
    app.add_option("--layers", cfg.n_layers);
    app.add_option("--d-model", cfg.d_model);
    app.add_flag("--json", json);
    CLI11_PARSE(app, argc, argv);

    at::set_num_threads(1);
    MoeTransformer model(cfg, std::make_shared<LocalDispatcher>(cfg.moe.num_experts), 1);
    Optimizer opt(model.params(), OptimConfig{});
    CheckpointStore store(dir, 2, {"", "bench"});
    std::filesystem::remove_all(dir);

    std::vector<double> save_s, copy_s, stall_ratio;
    int64_t bytes = 0;
    TrainingState st;
    for (int r = 0; r < rounds; ++r) {
        // Synchronous save of a snapshot: HDF5 layout, data write + fsync, SHA-256, manifest,
        // rename, LATEST, pruning. The staging copy is timed on its own.
        st.step = 2 * r + 1;
        auto t0 = std::chrono::steady_clock::now();
        CheckpointSnapshot snapshot = take_snapshot(model.params(), opt, st);
        copy_s.push_back(seconds_since(t0));
        t0 = std::chrono::steady_clock::now();
        const std::string saved = store.save(snapshot);
        save_s.push_back(seconds_since(t0));
        bytes = int64_t(std::filesystem::file_size(saved + "/" + shard_file_name(0)));

        // Async save: what the training loop waits for (copy + hand-off), against the copy inside it.
        st.step = 2 * r + 2;
        t0 = std::chrono::steady_clock::now();
        CheckpointSnapshot staged = take_snapshot(model.params(), opt, st);
        const double copy = seconds_since(t0);
        store.save_async(std::move(staged));
        const double stall = seconds_since(t0);
        stall_ratio.push_back(stall / copy);
        store.wait();
    }
    std::filesystem::remove_all(dir);

    const double mb = double(bytes) / 1e6, save = median(save_s), copy = median(copy_s), ratio = median(stall_ratio);
    if (json) {
        fmt::print("{{\"parameters\": {}, \"shard_bytes\": {}, \"save_s\": {:.4f}, \"save_mb_per_s\": {:.1f}, "
                   "\"staging_copy_s\": {:.4f}, \"async_stall_over_copy\": {:.4f}}}\n",
                   model.params().total_numel(), bytes, save, mb / save, copy, ratio);
    } else {
        fmt::print("model: {} parameters, shard {:.0f} MB (parameters + AdamW moments)\n", model.params().total_numel(), mb);
        fmt::print("save of a staged snapshot: {:.2f} s = {:.0f} MB/s (median of {}); staging copy {:.2f} s\n", save,
                   mb / save, rounds, copy);
        fmt::print("async save: the training loop waits {:.3f} x the staging copy\n", ratio);
    }
    return 0;
}
