// The table of every configuration key: its path, how to read and check a YAML value into the
// Config struct, and how to write it back. config_parse.cpp walks YAML against this table, so a
// key is accepted, validated, overridable with --set and emitted by config_to_yaml in one place.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <vector>

#include "config/config.h"

namespace moe {

struct ConfigField {
    std::string path;  // "model.n_heads"
    std::string kind;  // for messages and docs: "positive integer", "number in (0, 1)", ...
    // Parses `node` into cfg; throws ConfigError via the `fail(expected)` callback on bad input.
    std::function<void(Config&, const YAML::Node&, const std::function<void(const std::string&)>& fail)> read;
    std::function<YAML::Node(const Config&)> write;
};

const std::vector<ConfigField>& config_schema();

}  // namespace moe
