// moe-train: train a Mixtral-style MoE language model from a YAML config.
//
//   moe-train configs/tiny.yaml
//   moe-train configs/tiny.yaml --set model.n_layers=6 --set train.steps=100 --run-dir runs/exp1
//   moe-train configs/tiny.yaml --run-dir runs/a --stop-after 100   # then the same without
//                                                                   # --stop-after continues it
//   mpirun -np 2 moe-train configs/tiny.yaml --set parallel.dp=2      # data parallelism
// Exit codes: 0 done, 1 error, 2 config error, 3 interrupted by a signal (checkpoint saved).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "parallel/device.h"
#include "parallel/mpi_communicator.h"
#include "parallel/parallel_context.h"
#include "config/config.h"
#include "train/stop_signal.h"
#include "train/trainer.h"

namespace {

std::string joined_command_line(int argc, char** argv) {
    std::string s;
    for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"moe-train: train a Mixtral-style Mixture-of-Experts language model"};
    std::string config_path;
    std::vector<std::string> overrides;
    moe::RunOptions options;
    app.add_option("config", config_path, "YAML configuration file (see docs/configuration.md)")->required();
    app.add_option("--set", overrides, "override one key, e.g. --set model.n_layers=6 (repeatable)");
    app.add_option("--run-dir", options.run_dir, "directory for this run's record, metrics and checkpoints "
                                                 "(default: <train.run_dir>/<run id>)");
    app.add_option("--resume", options.resume,
                   "auto (default): continue from the newest valid checkpoint in the checkpoint dir, if any; "
                   "never; or a checkpoint directory to start from");
    app.add_option("--stop-after", options.stop_after,
                   "stop after this many steps with a checkpoint, as a signal would (the LR schedule still "
                   "spans train.steps)")
        ->check(CLI::PositiveNumber);
    std::string progress = "auto";
    app.add_option("--progress", progress,
                   "auto (default): a live line on a terminal, plain lines under mpirun/srun or into a file; "
                   "live; or plain")
        ->check(CLI::IsMember({"auto", "live", "plain"}));
    CLI11_PARSE(app, argc, argv);
    options.progress = progress == "live"    ? moe::ProgressMode::live
                       : progress == "plain" ? moe::ProgressMode::plain
                                             : moe::ProgressMode::auto_detect;

    // Under mpirun every rank runs this; an error on one rank must end them all (a peer waiting in
    // a collective would otherwise hang until the job's time limit).
    std::shared_ptr<moe::ParallelContext> parallel;
    auto fail = [&](int code, const std::string& what) {
        const bool many = parallel && parallel->mesh.world > 1;
        fmt::print(stderr, "moe-train: {}{}\n", many ? fmt::format("rank {}: ", parallel->mesh.rank) : "", what);
        if (many) moe::abort_mpi_job(code);
        return code;
    };
    try {
        moe::Config cfg = moe::load_config(config_path, overrides);
        try {
            // Before anything else asks libtorch about CUDA (device.h says why).
            const c10::Device device = moe::select_device(cfg.train.device, "train.device");
            parallel = moe::ParallelContext::create(cfg.parallel, cfg.model.moe.num_experts, device);
        } catch (const moe::ConfigError& e) {   // the layout does not fit the launch: name the file too
            throw moe::ConfigError(fmt::format("{} ({})", e.what(), cfg.source_path));
        }
        moe::install_stop_signal_handlers();
        moe::Trainer trainer(std::move(cfg), joined_command_line(argc, argv), options, parallel);
        return trainer.run();
    } catch (const moe::ConfigError& e) {
        return fail(2, fmt::format("config error: {}", e.what()));
    } catch (const std::exception& e) {
        return fail(1, fmt::format("error: {}", e.what()));
    }
}
