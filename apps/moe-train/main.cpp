// moe-train: train a Mixtral-style MoE language model from a YAML config.
//
//   moe-train configs/tiny.yaml
//   moe-train configs/tiny.yaml --set model.n_layers=6 --set train.steps=100 --run-dir runs/exp1
//   mpirun -np 2 moe-train configs/dp2.yaml
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "train/config.h"
#include "train/features.h"
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
    std::string run_dir;
    app.add_option("config", config_path, "YAML configuration file (see docs/configuration.md)")->required();
    app.add_option("--set", overrides, "override one key, e.g. --set model.n_layers=6 (repeatable)");
    app.add_option("--run-dir", run_dir, "directory for this run's record, metrics and checkpoints "
                                         "(default: <train.run_dir>/<run id>)");
    CLI11_PARSE(app, argc, argv);

    try {
        moe::Config cfg = moe::load_config(config_path, overrides);
        moe::reject_unavailable_features(cfg);
        moe::Trainer trainer(std::move(cfg), joined_command_line(argc, argv), run_dir);
        return trainer.run();
    } catch (const moe::ConfigError& e) {
        fmt::print(stderr, "moe-train: config error: {}\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        fmt::print(stderr, "moe-train: error: {}\n", e.what());
        return 1;
    }
}
