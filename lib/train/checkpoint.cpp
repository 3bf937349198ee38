#include "train/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <mutex>
#include <filesystem>

#include "common/error.h"
#include "train/file_io.h"
#include "train/hdf5_file.h"
#include "train/run_record.h"

namespace fs = std::filesystem;

namespace moe {

namespace {

std::vector<int64_t> hf_shape(const ParamEntry& e) {
    auto sizes = e.value.sizes().vec();
    if (e.stacked()) sizes.erase(sizes.begin());
    return sizes;
}

// The same tensor of another buffer laid out like the parameters (AdamW moments share offsets).
torch::Tensor same_view(const ParamEntry& e, const torch::Tensor& flat) {
    return flat.narrow(0, e.offset, e.value.numel()).view(e.value.sizes());
}

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

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

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

CheckpointSnapshot take_snapshot(const ParameterStore& params, AdamW& optimizer, const TrainingState& state) {
    torch::NoGradGuard no_grad;
    CheckpointSnapshot s;
    for (const auto& slot : tensor_slots(params)) {
        const ParamEntry& e = *slot.entry;
        auto g = e.group;
        s.model.push_back({slot.name, slot_tensor(slot, e.value.detach()).clone().contiguous()});
        s.exp_avg.push_back({slot.name, slot_tensor(slot, same_view(e, optimizer.exp_avg(g))).clone().contiguous()});
        s.exp_avg_sq.push_back({slot.name, slot_tensor(slot, same_view(e, optimizer.exp_avg_sq(g))).clone().contiguous()});
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
            const std::string path = dir + "/" + f["name"].as<std::string>();
            if (!fs::exists(path)) return {VerifyStatus::missing_shard, fmt::format("{}: shard missing", path)};
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

void load_checkpoint(const std::string& dir, int64_t rank, ParameterStore& params, AdamW* optimizer,
                     TrainingState* state) {
    load_checkpoint_shards(dir, {rank}, params, optimizer, state);
}

void load_checkpoint_shards(const std::string& dir, const std::vector<int64_t>& ranks, ParameterStore& params,
                            AdamW* optimizer, TrainingState* state) {
    MOE_CHECK(!ranks.empty(), "{}: no shard to load", dir);
    std::vector<Hdf5File> files;
    for (int64_t rank : ranks) {
        const std::string path = dir + "/" + shard_file_name(rank);
        files.push_back(Hdf5File::open_read(path));
        Hdf5File& f = files.back();
        if (f.attribute_string("/", "format") != kCheckpointFormat)
            throw CheckpointError(fmt::format("{}: not a moe-train checkpoint shard", path));
        if (int64_t v = f.attribute_int("/", "version"); v != kCheckpointVersion)
            throw CheckpointError(fmt::format("{}: format version {} (this build reads {})", path, v, kCheckpointVersion));
    }
    const std::string path = files.size() == 1 ? files[0].path() : dir;   // for messages

    torch::NoGradGuard no_grad;
    auto load_into = [&](const std::string& dataset, const std::string& name, const std::vector<int64_t>& want,
                         torch::Tensor dst) {
        Hdf5File* holder = nullptr;   // the first shard holding the tensor (expert shards hold only theirs)
        for (auto& candidate : files)
            if (candidate.exists(dataset)) {
                holder = &candidate;
                break;
            }
        if (!holder)
            throw CheckpointError(fmt::format("{}: tensor '{}' is missing (model built from the config expects {})",
                                              path, name, shape_str(want)));
        Hdf5File& f = *holder;
        if (const std::string dt = f.dtype(dataset); dt != "float32")
            throw CheckpointError(fmt::format("{}: tensor '{}' has dtype {} in the checkpoint but float32 in the model",
                                              path, name, dt));
        auto have = f.shape(dataset);
        if (have != want)
            throw CheckpointError(fmt::format("{}: tensor '{}' has shape {} in the checkpoint but {} in the model", path,
                                              name, shape_str(have), shape_str(want)));
        auto tmp = torch::empty(want, torch::kFloat32);
        f.read_floats(dataset, tmp.data_ptr<float>(), tmp.numel());
        dst.copy_(tmp);
    };
    for (const auto& slot : tensor_slots(params)) {
        const ParamEntry& e = *slot.entry;
        auto want = hf_shape(e);
        load_into("/model/" + slot.name, slot.name, want, slot_tensor(slot, e.value.detach()));
        if (optimizer) {
            load_into("/optim/" + slot.name + "/exp_avg", slot.name + "/exp_avg", want,
                      slot_tensor(slot, same_view(e, optimizer->exp_avg(e.group))));
            load_into("/optim/" + slot.name + "/exp_avg_sq", slot.name + "/exp_avg_sq", want,
                      slot_tensor(slot, same_view(e, optimizer->exp_avg_sq(e.group))));
        }
    }
    Hdf5File& f = files.front();   // training state: the same in every shard
    if (optimizer) optimizer->set_step_count(f.attribute_int("/optim", "step"));
    if (state) {
        state->step = f.attribute_int("/state/schedule", "step");
        state->tokens = f.attribute_int("/state/counters", "tokens");
        state->skipped_steps = f.attribute_int("/state/counters", "skipped_steps");
        state->bad_steps_in_a_row = f.attribute_int("/state/counters", "bad_steps_in_a_row");
        state->train_seconds = f.attribute_double("/state/counters", "train_seconds");
        state->data.next_sample = uint64_t(f.attribute_int("/state/data", "next_sample"));
        state->torch_rng = f.read_bytes("/state/rng/torch_cpu");
    }
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
    write_model_attributes(f, identity_.model);
    f.set_attribute("/optim", "step", s.optimizer_steps);
    f.write_bytes("/state/rng/torch_cpu", s.state.torch_rng);
    f.create_group("/state/data");
    f.set_attribute("/state/data", "next_sample", int64_t(s.state.data.next_sample));
    f.create_group("/state/schedule");
    f.set_attribute("/state/schedule", "step", s.state.step);
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
    return save_collective(s, *self, /*writer=*/true);
}

void CheckpointStore::prune() {
    auto steps = list_steps();
    for (size_t i = size_t(keep_); i < steps.size(); ++i) {
        std::error_code ignored;
        fs::remove_all(steps[i], ignored);
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

std::optional<std::string> CheckpointStore::latest_valid(std::vector<std::string>* skipped) const {
    std::vector<std::string> candidates;
    try {
        std::string latest = read_file(root_ + "/LATEST");
        latest.erase(latest.find_last_not_of(" \n\r\t") + 1);
        if (!latest.empty()) candidates.push_back(root_ + "/" + latest);
    } catch (const std::exception&) {
        // no LATEST: fall back to scanning
    }
    for (auto& d : list_steps())
        if (std::find(candidates.begin(), candidates.end(), d) == candidates.end()) candidates.push_back(d);
    for (const auto& d : candidates) {
        auto v = verify_checkpoint(d);
        if (v.ok()) return d;
        if (skipped) skipped->push_back(v.message);
    }
    return std::nullopt;
}

std::string default_checkpoint_dir(const std::string& configured, const std::string& run_dir, const std::string& run_id,
                                   const std::string& fly_volume) {
    if (!configured.empty()) return configured;
    if (std::getenv("FLY_APP_NAME") && fs::is_directory(fly_volume)) return fly_volume + "/checkpoints/" + run_id;
    return run_dir + "/checkpoints";
}

}  // namespace moe
