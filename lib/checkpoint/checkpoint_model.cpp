#include "checkpoint/checkpoint_model.h"

#include <filesystem>

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
    LoadedCheckpoint ck;
    ck.dir = resolve_checkpoint_dir(path);
    const YAML::Node manifest = read_manifest(ck.dir);
    std::vector<int64_t> ranks;
    const int64_t world = manifest["world"]["size"].as<int64_t>(1);
    for (const auto& f : manifest["files"]) {
        const auto rank = f["rank"].as<int64_t>();
        if (rank < 0 || rank >= world || f["name"].as<std::string>() != shard_file_name(rank))
            throw CheckpointError(fmt::format("{}/manifest.yaml: shard {} of rank {} does not fit a world of {}", ck.dir,
                                              f["name"].as<std::string>(), rank, world));
        ranks.push_back(rank);
    }
    YAML::Emitter out;
    out << manifest["config"];
    ck.config = parse_config(out.c_str(), ck.dir + "/manifest.yaml (config)");
    ck.model = std::make_unique<MoeTransformer>(
        ck.config.model, std::make_shared<LocalDispatcher>(ck.config.model.moe.num_experts), ck.config.train.seed);
    load_checkpoint_shards(ck.dir, ranks, ck.model->params(), nullptr, &ck.state);
    return ck;
}

}  // namespace moe
