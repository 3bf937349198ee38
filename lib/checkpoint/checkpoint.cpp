#include "checkpoint/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <future>
#include <mutex>
#include <filesystem>

#include "common/error.h"
#include "common/file_io.h"
#include "checkpoint/hdf5_file.h"
#include "checkpoint/tensor_layout.h"
#include "common/crash_point.h"
#include "common/iso_time.h"

namespace fs = std::filesystem;

namespace moe {

using namespace checkpoint_detail;

namespace {

// The hyperparameters a reader needs besides the tensors' shapes (docs/checkpoint-format.md).
void write_model_attributes(Hdf5File& f, const ModelConfig& m) {
    f.create_group("/model");
    const std::pair<const char*, int64_t> ints[] = {
        {"vocab_size", m.vocab_size},       {"d_model", m.d_model},
        {"n_layers", m.n_layers},           {"n_heads", m.n_heads},
        {"n_kv_heads", m.n_kv_heads},       {"head_dim", m.head_dim()},
        {"max_seq_len", m.max_seq_len},     {"tie_embeddings", m.tie_embeddings},
        {"num_experts", m.moe.num_experts}, {"top_k", m.moe.top_k},
        {"ffn_hidden", m.moe.ffn_hidden},   {"shared_experts", m.moe.shared_experts},
        {"first_dense_layers", m.moe.first_dense_layers},
        {"renormalize", m.moe.renormalize}};
    for (const auto& [name, v] : ints) f.set_attribute("/model", name, v);
    f.set_attribute("/model", "rope_theta", m.rope_theta);
    f.set_attribute("/model", "norm_eps", m.norm_eps);
    f.set_attribute("/model", "capacity_factor", m.moe.capacity_factor);
    f.set_attribute("/model", "routing", std::string(m.moe.routing == Routing::token_choice ? "token_choice" : "expert_choice"));
}

}  // namespace

std::string step_dir_name(int64_t step) { return fmt::format("step-{:08d}", step); }
std::string shard_file_name(int64_t rank) { return fmt::format("rank-{:05d}.h5", rank); }

std::vector<TensorSlot> tensor_slots(const ParameterStore& params) {
    std::vector<TensorSlot> slots;
    for (const auto& e : params.entries()) {
        if (e.stacked())
            for (int64_t j = 0; j < e.num_experts; ++j) slots.push_back({e.slice_name(j), &e, j});
        else
            slots.push_back({e.name, &e, -1});
    }
    return slots;
}

torch::Tensor slot_tensor(const TensorSlot& s, const torch::Tensor& full) {
    return s.slice >= 0 ? full.select(0, s.slice) : full;
}

std::vector<uint8_t> torch_rng_state() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    at::Tensor t = gen.get_state();
    const auto* p = t.data_ptr<uint8_t>();
    return {p, p + t.numel()};
}

void set_torch_rng_state(const std::vector<uint8_t>& bytes) {
    if (bytes.empty()) return;
    auto gen = at::detail::getDefaultCPUGenerator();
    at::Tensor t = torch::empty({int64_t(bytes.size())}, torch::kUInt8);
    std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t);
}

torch::Tensor staging_copy(const torch::Tensor& t) {
    return t.to(t.options().device(torch::kCPU), /*non_blocking=*/false, /*copy=*/true).contiguous();
}

CheckpointSnapshot take_snapshot(const ParameterStore& params, Optimizer& optimizer, const TrainingState& state) {
    torch::NoGradGuard no_grad;
    CheckpointSnapshot s;
    for (const auto& slot : tensor_slots(params)) {
        const ParamEntry& e = *slot.entry;
        auto g = e.group;
        s.model.push_back({slot.name, staging_copy(slot_tensor(slot, e.value.detach()))});
        s.exp_avg.push_back({slot.name, staging_copy(slot_tensor(slot, same_view(e, optimizer.exp_avg(g))))});
        s.exp_avg_sq.push_back({slot.name, staging_copy(slot_tensor(slot, same_view(e, optimizer.exp_avg_sq(g))))});
    }
    s.optimizer_steps = optimizer.step_count();
    s.state = state;
    return s;
}

YAML::Node read_manifest(const std::string& dir) {
    const std::string path = dir + "/manifest.yaml";
    try {
        YAML::Node m = YAML::Load(read_file(path));
        if (!m.IsMap() || m["format"].as<std::string>("") != kCheckpointFormat)
            throw CheckpointError(fmt::format("{}: not a moe-train checkpoint manifest", path));
        return m;
    } catch (const YAML::Exception& e) {
        throw CheckpointError(fmt::format("{}: unreadable manifest: {}", path, e.what()));
    }
}

VerifyResult verify_checkpoint(const std::string& dir) {
    if (!fs::exists(dir + "/manifest.yaml"))
        return {VerifyStatus::no_manifest, fmt::format("{}: no manifest.yaml (incomplete checkpoint)", dir)};
    YAML::Node m;
    try {
        m = read_manifest(dir);
        if (!m["files"].IsSequence() || m["files"].size() == 0) throw CheckpointError("manifest lists no shard files");
        for (const auto& f : m["files"]) {
            const std::string name = f["name"].as<std::string>();
            // A shard name is rank-NNNNN.h5 in this folder, never a path to elsewhere.
            if (name.size() != shard_file_name(0).size() || name.rfind("rank-", 0) != 0 ||
                name.find('/') != std::string::npos || name.substr(name.size() - 3) != ".h5")
                throw CheckpointError(fmt::format("shard name '{}' is not rank-NNNNN.h5", name));
            const std::string path = dir + "/" + name;
            std::error_code ec;
            const auto st = fs::symlink_status(path, ec);
            if (ec || !fs::exists(st)) return {VerifyStatus::missing_shard, fmt::format("{}: shard missing", path)};
            if (!fs::is_regular_file(st))
                return {VerifyStatus::missing_shard, fmt::format("{}: shard is not a regular file", path)};
            const auto size = f["bytes"].as<uint64_t>();
            if (fs::file_size(path) != size)
                return {VerifyStatus::size_mismatch,
                        fmt::format("{}: size {} bytes, manifest says {}", path, fs::file_size(path), size)};
            if (sha256_file(path) != f["sha256"].as<std::string>())
                return {VerifyStatus::checksum_mismatch, fmt::format("{}: SHA-256 does not match the manifest", path)};
        }
    } catch (const std::exception& e) {
        return {VerifyStatus::bad_manifest, fmt::format("{}/manifest.yaml: {}", dir, e.what())};
    }
    return {};
}


CheckpointStore::CheckpointStore(std::string root, int64_t keep, CheckpointIdentity identity, int64_t rank)
    : root_(std::move(root)), keep_(std::max<int64_t>(keep, 2)), identity_(std::move(identity)), rank_(rank) {}

CheckpointStore::~CheckpointStore() {
    try {
        wait();
    } catch (const std::exception& e) {
        fmt::print(stderr, "moe-train: checkpoint save failed: {}\n", e.what());
    }
}

void CheckpointStore::remove_stale_temporaries() {
    if (!fs::is_directory(root_)) return;
    for (const auto& d : fs::directory_iterator(root_)) {
        const std::string name = d.path().filename().string();
        if (name.rfind(".tmp-", 0) == 0) fs::remove_all(d.path());
    }
}

std::string CheckpointStore::write_shard(const std::string& path, const CheckpointSnapshot& s) const {
    // HDF5 writes the layout and the small items; the tensors' bytes go straight from the
    // snapshot to their reserved offsets afterwards (one pass of checked writes, no copies).
    Hdf5File f = Hdf5File::create(path);
    std::vector<FileRegion> regions;
    auto reserve = [&](const std::string& dataset, const torch::Tensor& t) {
        const int64_t at = f.reserve_floats(dataset, t.sizes().vec());
        if (at >= 0) regions.push_back({at, t.data_ptr<float>(), size_t(t.numel()) * sizeof(float)});
    };
    for (const auto& t : s.model) reserve("/model/" + t.name, t.value);
    for (size_t i = 0; i < s.exp_avg.size(); ++i) {
        reserve("/optim/" + s.exp_avg[i].name + "/exp_avg", s.exp_avg[i].value);
        reserve("/optim/" + s.exp_avg_sq[i].name + "/exp_avg_sq", s.exp_avg_sq[i].value);
    }
    for (const auto& t : s.sync_state) reserve("/state/" + t.name, t.value);
    write_model_attributes(f, identity_.model);
    f.set_attribute("/optim", "step", s.optimizer_steps);
    f.write_bytes("/state/rng/torch_cpu", s.state.torch_rng);
    f.create_group("/state/data");
    f.set_attribute("/state/data", "next_sample", int64_t(s.state.data.next_sample));
    f.create_group("/state/schedule");
    f.set_attribute("/state/schedule", "step", s.state.step);
    if (!s.sync_counters.empty()) {
        f.create_group("/state/sync_counters");
        for (const auto& [name, value] : s.sync_counters) f.set_attribute("/state/sync_counters", name, value);
    }
    f.create_group("/state/counters");
    f.set_attribute("/state/counters", "tokens", s.state.tokens);
    f.set_attribute("/state/counters", "skipped_steps", s.state.skipped_steps);
    f.set_attribute("/state/counters", "bad_steps_in_a_row", s.state.bad_steps_in_a_row);
    f.set_attribute("/state/counters", "train_seconds", s.state.train_seconds);
    f.set_attribute("/", "format", std::string(kCheckpointFormat));
    f.set_attribute("/", "version", kCheckpointVersion);
    f.set_attribute("/", "step", s.state.step);
    f.set_attribute("/", "tokens", s.state.tokens);
    f.set_attribute("/", "rank", rank_);
    f.set_attribute("/", "config_hash", identity_.config_hash);
    f.set_attribute("/", "config", identity_.config_yaml);
    f.close();
    std::sort(regions.begin(), regions.end(), [](const FileRegion& a, const FileRegion& b) { return a.offset < b.offset; });
    // Hash (one core) while the data goes to disk (the other core and the device).
    auto sha256 = std::async(std::launch::async, [&] { return sha256_file_as_written(path, regions); });
    write_regions_durably(path, regions);
    return sha256.get();
}

void CheckpointStore::write_manifest(const std::string& tmp, const CheckpointSnapshot& s,
                                     const std::vector<ShardRecord>& shards) const {
    YAML::Node m;
    m["format"] = kCheckpointFormat;
    m["version"] = kCheckpointVersion;
    m["step"] = s.state.step;
    m["tokens"] = s.state.tokens;
    m["created"] = iso_time_now();
    m["config_hash"] = identity_.config_hash;
    YAML::Node world;
    world["size"] = identity_.world_size;
    world["pp"] = identity_.pp;
    world["dp"] = identity_.dp;
    world["ep"] = identity_.ep;
    m["world"] = world;
    if (!identity_.host.empty()) m["host"] = identity_.host;   // per-host storage: this host's shards only
    for (const auto& r : shards) {
        YAML::Node file;
        file["name"] = r.name;
        file["rank"] = r.rank;
        file["bytes"] = r.bytes;
        file["sha256"] = r.sha256;
        m["files"].push_back(file);
    }
    m["config"] = YAML::Load(identity_.config_yaml);
    YAML::Emitter out;
    out << m;
    write_file_atomically(tmp + "/manifest.yaml", std::string(out.c_str()) + "\n");
}

std::string CheckpointStore::save(const CheckpointSnapshot& s) {
    // One rank is the multi-rank commit protocol over a group of one (every agreement a no-op).
    auto self = make_self_communicator("checkpoint");
    return save_collective(s, *self, *self, /*writer=*/true);
}

void CheckpointStore::prune() {
    auto steps = list_steps();
    for (size_t i = size_t(keep_); i < steps.size(); ++i) {
        // Out of sight first, in one rename: a kill during the removal leaves a .tmp-* folder
        // (removed at the next start), never a step folder with its manifest and half its shards.
        const fs::path step(steps[i]);
        const fs::path doomed = step.parent_path() / (".tmp-prune-" + step.filename().string());
        std::error_code ignored;
        fs::remove_all(doomed, ignored);
        fs::rename(step, doomed, ignored);
        if (ignored) continue;   // left for the next prune
        crash_point("prune:after-rename");
        fs::remove_all(doomed, ignored);
    }
}

void CheckpointStore::save_async(CheckpointSnapshot snapshot) {
    wait();
    worker_ = std::thread([this, s = std::move(snapshot)] {
        try {
            save(s);
        } catch (...) {
            worker_error_ = std::current_exception();
        }
    });
}

void CheckpointStore::save_collective_async(CheckpointSnapshot snapshot, Communicator& world, Communicator& host,
                                            bool writer) {
    wait();
    worker_ = std::thread([this, s = std::move(snapshot), &world, &host, writer] {
        try {
            save_collective(s, world, host, writer);
        } catch (...) {
            worker_error_ = std::current_exception();
        }
    });
}

void CheckpointStore::wait() {
    if (worker_.joinable()) worker_.join();
    if (worker_error_) {
        auto e = worker_error_;
        worker_error_ = nullptr;
        std::rethrow_exception(e);
    }
}

std::vector<std::string> CheckpointStore::list_steps() const {
    std::vector<std::string> dirs;
    if (!fs::is_directory(root_)) return dirs;
    for (const auto& d : fs::directory_iterator(root_)) {
        const std::string name = d.path().filename().string();
        if (d.is_directory() && name.rfind("step-", 0) == 0 && fs::exists(d.path() / "manifest.yaml"))
            dirs.push_back(d.path().string());
    }
    std::sort(dirs.rbegin(), dirs.rend());   // zero-padded names sort by step
    return dirs;
}

std::vector<std::string> CheckpointStore::candidates(std::vector<std::string>* notes) const {
    auto note = [&](std::string n) {
        if (notes) notes->push_back(std::move(n));
    };
    const std::vector<std::string> steps = list_steps();   // newest first
    // LATEST is a hint: the name of a sibling step folder. The newest complete step folder is
    // tried first whatever it says (a kill between the folder's rename and LATEST's update leaves
    // LATEST one behind); what it says otherwise is reported, never followed elsewhere.
    const std::string latest_path = root_ + "/LATEST";
    std::error_code ec;
    const auto latest_status = fs::symlink_status(latest_path, ec);
    if (!ec && fs::exists(latest_status)) {
        if (!fs::is_regular_file(latest_status)) {
            note(fmt::format("{}: not a regular file; ignored (replaced at the next save)", latest_path));
        } else {
            std::string latest;
            try {
                latest = fs::file_size(latest_path) <= 64 ? read_file(latest_path) : "(too long)";
            } catch (const std::exception& e) {
                latest = "(unreadable)";
            }
            latest.erase(latest.find_last_not_of(" \n\r\t") + 1);
            const bool step_name = latest.size() == step_dir_name(0).size() && latest.rfind("step-", 0) == 0 &&
                                   latest.find_first_not_of("0123456789", 5) == std::string::npos;
            if (!step_name)
                note(fmt::format("{}: '{}' is not a step folder's name; ignored", latest_path, latest));
            else if (!steps.empty() && fs::path(steps.front()).filename() != latest)
                note(fmt::format("{}: names {}, but {} is the newest complete checkpoint; trying the newest first",
                                 latest_path, latest, fs::path(steps.front()).filename().string()));
        }
    }
    std::vector<std::string> valid;
    for (const auto& d : steps) {
        auto v = verify_checkpoint(d);
        if (v.ok())
            valid.push_back(d);
        else
            note(v.message);
    }
    return valid;
}

std::optional<std::string> CheckpointStore::latest_valid(std::vector<std::string>* skipped) const {
    auto valid = candidates(skipped);
    if (valid.empty()) return std::nullopt;
    return valid.front();
}

std::string default_checkpoint_dir(const std::string& configured, const std::string& run_dir, const std::string& run_id,
                                   const std::string& fly_volume) {
    if (!configured.empty()) return configured;
    if (std::getenv("FLY_APP_NAME") && fs::is_directory(fly_volume)) return fly_volume + "/checkpoints/" + run_id;
    return run_dir + "/checkpoints";
}

}  // namespace moe
