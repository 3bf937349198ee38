#include "checkpoint/checkpoint_model.h"

#include <filesystem>
#include <set>

#include "common/error.h"

namespace moe {

std::string resolve_checkpoint_dir(const std::string& path) {
    if (std::filesystem::exists(path + "/manifest.yaml")) {
        auto v = verify_checkpoint(path);
        if (!v.ok()) throw CheckpointError(v.message);
        return path;
    }
    if (!std::filesystem::is_directory(path))
        throw CheckpointError(fmt::format("{}: no such checkpoint directory", path));
    CheckpointStore store(path, 2, {});
    std::vector<std::string> skipped;
    auto found = store.latest_valid(&skipped);
    for (const auto& why : skipped) fmt::print(stderr, "skipping checkpoint: {}\n", why);
    if (!found) throw CheckpointError(fmt::format("{}: holds no valid checkpoint (step-*/manifest.yaml)", path));
    return *found;
}

LoadedCheckpoint load_model_checkpoint(const std::string& path) {
    // Per-host storage: one folder per host, comma-separated; the same step in each, and each
    // manifest lists its host's shards.
    std::vector<std::string> parts;
    for (size_t at = 0;;) {
        const size_t comma = path.find(',', at);
        parts.push_back(path.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
        if (comma == std::string::npos) break;
        at = comma + 1;
    }
    LoadedCheckpoint ck;
    std::vector<std::string> files;
    std::set<std::string> seen;
    int64_t step = -1;
    YAML::Node first;
    for (const auto& part : parts) {
        const std::string dir = resolve_checkpoint_dir(part);
        const YAML::Node manifest = read_manifest(dir);
        const int64_t world = manifest["world"]["size"].as<int64_t>(1), at_step = manifest["step"].as<int64_t>(-1);
        if (step >= 0 && at_step != step)
            throw CheckpointError(fmt::format("{} is at step {}, but {} at step {}: one step's folders are needed", dir,
                                              at_step, ck.dir, step));
        if (step < 0) ck.dir = dir, step = at_step, first = manifest;
        for (const auto& f : manifest["files"]) {
            const auto rank = f["rank"].as<int64_t>();
            const auto name = f["name"].as<std::string>();
            if (rank < 0 || rank >= world || name != shard_file_name(rank))
                throw CheckpointError(fmt::format("{}/manifest.yaml: shard {} of rank {} does not fit a world of {}", dir,
                                                  name, rank, world));
            if (seen.insert(name).second) files.push_back(dir + "/" + name);
        }
    }
    YAML::Emitter out;
    out << first["config"];
    ck.config = parse_config(out.c_str(), ck.dir + "/manifest.yaml (config)");
    ck.model = std::make_unique<MoeTransformer>(
        ck.config.model, std::make_shared<LocalDispatcher>(ck.config.model.moe.num_experts), ck.config.train.seed);
    load_checkpoint_files(files, ck.model->params(), nullptr, &ck.state);
    return ck;
}

}  // namespace moe
