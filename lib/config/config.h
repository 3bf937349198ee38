// The whole run configuration: one struct per YAML section, each owned by its component.
// load_config() is the only place YAML becomes these structs; it rejects unknown keys, wrong
// types and out-of-range values with the key path and file:line.
//
//   moe::Config cfg = moe::load_config("configs/tiny.yaml", {"model.n_layers=6"});
#pragma once

#include <string>
#include <vector>

#include "compress/compress_config.h"
#include "data/data_config.h"
#include "moe/model_config.h"
#include "optim/optim_config.h"
#include "parallel/parallel_config.h"
#include "config/train_config.h"

namespace moe {

struct Config {
    ModelConfig model;
    DataConfig data;
    OptimConfig optim;
    TrainConfig train;
    CheckpointConfig checkpoint;
    ParallelConfig parallel;
    CompressConfig compress;
    AsyncConfig async;
    SimulateConfig simulate;

    std::string source_path;             // the YAML file it came from
    std::vector<std::string> overrides;  // --set key=value, in order
};

// Parses `path`, applies `overrides` ("a.b.c=value", validated like file values) and checks
// cross-field constraints. Throws ConfigError naming file, line and key path.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Parses YAML text (for tests); `origin` is used in messages in place of a file name.
Config parse_config(const std::string& yaml_text, const std::string& origin,
                    const std::vector<std::string>& overrides = {});

// The resolved configuration as YAML (every key, defaults included), for run records and
// checkpoint manifests. Round-trips through parse_config.
std::string config_to_yaml(const Config& cfg);

// Stable hash of config_to_yaml for the fields that define the model and its parameter shapes.
std::string model_config_hash(const Config& cfg);

}  // namespace moe
