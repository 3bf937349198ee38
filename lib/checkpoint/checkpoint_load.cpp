// Loading a checkpoint, all or nothing: every tensor and counter is checked against the model
// the config builds before anything changes (checkpoint.h, load_checkpoint).
#include <filesystem>
#include <cmath>
#include <map>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/hdf5_file.h"
#include "checkpoint/tensor_layout.h"
#include "common/error.h"

namespace moe {

using namespace checkpoint_detail;

void load_checkpoint(const std::string& dir, int64_t rank, ParameterStore& params, Optimizer* optimizer,
                     TrainingState* state) {
    load_checkpoint_shards(dir, {rank}, params, optimizer, state);
}

namespace {

// The largest counter a checkpoint may hold: far beyond any run, far below overflow.
constexpr int64_t kMaxCounter = int64_t(1) << 50;

int64_t counter(const Hdf5File& f, const std::string& object, const std::string& name, int64_t lo = 0,
                int64_t hi = kMaxCounter) {
    const int64_t v = f.attribute_int(object, name);
    if (v < lo || v > hi)
        throw CheckpointError(fmt::format("{}: {}@{} is {}, outside [{}, {}]", f.path(), object, name, v, lo, hi));
    return v;
}

void check_finite(const torch::Tensor& t, const std::string& path, const std::string& dataset, bool non_negative) {
    if (!torch::isfinite(t).all().item<bool>())
        throw CheckpointError(fmt::format("{}: dataset '{}' holds NaN or infinite values", path, dataset));
    if (non_negative && t.numel() > 0 && t.min().item<float>() < 0)
        throw CheckpointError(fmt::format("{}: dataset '{}' holds negative values (a second moment cannot)", path, dataset));
}

// Every name under `group` across the shards (a tensor may be in several: dense parameters are in
// every expert shard), each with the first shard that holds it.
std::map<std::string, Hdf5File*> names_under(std::vector<Hdf5File>& files, const std::string& group) {
    std::map<std::string, Hdf5File*> names;
    for (auto& f : files)
        if (f.exists(group))
            for (const auto& n : f.list(group)) names.emplace(n, &f);
    return names;
}

}  // namespace

namespace {
bool load_shards(const std::vector<std::string>& paths, ParameterStore& params, Optimizer* optimizer,
                 TrainingState* state, const std::vector<SyncStateTensor>& sync_state,
                 const std::vector<SyncCounter>& sync_counters);

std::vector<std::string> shard_paths(const std::string& dir, const std::vector<int64_t>& ranks) {
    MOE_CHECK(!ranks.empty(), "{}: no shard to load", dir);
    std::vector<std::string> paths;
    for (int64_t rank : ranks) paths.push_back(dir + "/" + shard_file_name(rank));
    return paths;
}
}

void load_checkpoint_shards(const std::string& dir, const std::vector<int64_t>& ranks, ParameterStore& params,
                            Optimizer* optimizer, TrainingState* state) {
    load_shards(shard_paths(dir, ranks), params, optimizer, state, {}, {});
}

void load_checkpoint_files(const std::vector<std::string>& paths, ParameterStore& params, Optimizer* optimizer,
                           TrainingState* state) {
    load_shards(paths, params, optimizer, state, {}, {});
}

bool load_checkpoint_with_sync_state(const std::string& dir, int64_t rank, ParameterStore& params, Optimizer& optimizer,
                                     TrainingState& state, const std::vector<SyncStateTensor>& sync_state,
                                     const std::vector<SyncCounter>& sync_counters) {
    return load_shards(shard_paths(dir, {rank}), params, &optimizer, &state, sync_state, sync_counters);
}

namespace {

bool load_shards(const std::vector<std::string>& paths, ParameterStore& params, Optimizer* optimizer,
                 TrainingState* state, const std::vector<SyncStateTensor>& sync_state,
                 const std::vector<SyncCounter>& sync_counters) {
    MOE_CHECK(!paths.empty(), "no shard to load");
    const std::string dir = std::filesystem::path(paths.front()).parent_path().string();
    std::vector<Hdf5File> files;
    for (const std::string& path : paths) {
        files.push_back(Hdf5File::open_read(path));
        Hdf5File& f = files.back();
        if (f.attribute_string("/", "format") != kCheckpointFormat)
            throw CheckpointError(fmt::format("{}: not a moe-train checkpoint shard", path));
        if (int64_t v = f.attribute_int("/", "version"); v != kCheckpointVersion)
            throw CheckpointError(fmt::format("{}: format version {} (this build reads {})", path, v, kCheckpointVersion));
    }
    const std::string where = files.size() == 1 ? files[0].path() : dir;   // for messages
    torch::NoGradGuard no_grad;

    // 1. The checkpoint's tensors and the model's are the same set, both ways: a tensor the model
    // lacks means the checkpoint is of another model, never something to skip.
    const std::vector<TensorSlot> slots = tensor_slots(params);
    std::set<std::string> expected;
    for (const auto& slot : slots) expected.insert(slot.name);
    const auto in_model = names_under(files, "/model"), in_optim = names_under(files, "/optim");
    for (const auto* names : {&in_model, &in_optim})
        for (const auto& [name, file] : *names)
            if (!expected.count(name))
                throw CheckpointError(fmt::format("{}: tensor '{}' is in the checkpoint but not in the model built from "
                                                  "the config (a checkpoint of another model?)",
                                                  file->path(), name));

    // 2. Every tensor read into a staging copy, checked (storage, dtype, shape before any
    // allocation, finite values); the model and optimizer change only once all of it passed.
    struct Staged {
        torch::Tensor value, dst;
    };
    std::vector<Staged> staged;
    // `holder` null: missing. Reads into a checked staging copy, committed to `dst` at the end.
    auto stage_from = [&](Hdf5File* holder, const std::string& dataset, const std::string& label,
                          const std::vector<int64_t>& want, torch::Tensor dst, bool non_negative) {
        if (!holder || !holder->exists(dataset))
            throw CheckpointError(fmt::format("{}: tensor '{}' is missing (model built from the config expects {})",
                                              where, label, shape_str(want)));
        Hdf5File& f = *holder;
        if (const std::string dt = f.dtype(dataset); dt != "float32")
            throw CheckpointError(fmt::format("{}: tensor '{}' has dtype {} in the checkpoint but float32 in the model",
                                              f.path(), label, dt));
        if (auto have = f.shape(dataset); have != want)
            throw CheckpointError(fmt::format("{}: tensor '{}' has shape {} in the checkpoint but {} in the model",
                                              f.path(), label, shape_str(have), shape_str(want)));
        auto tmp = torch::empty(want, torch::kFloat32);
        f.read_floats(dataset, tmp.data_ptr<float>(), tmp.numel());
        check_finite(tmp, f.path(), dataset, non_negative);
        if (dst.defined()) staged.push_back({tmp, dst});   // (a model-only load checks the moments, one at a time)
    };
    auto stage = [&](const std::map<std::string, Hdf5File*>& names, const std::string& dataset, const std::string& name,
                     const std::string& label, const std::vector<int64_t>& want, torch::Tensor dst, bool non_negative) {
        auto it = names.find(name);
        stage_from(it == names.end() ? nullptr : it->second, dataset, label, want, dst, non_negative);
    };
    for (const auto& slot : slots) {
        const ParamEntry& e = *slot.entry;
        const auto want = hf_shape(e);
        stage(in_model, "/model/" + slot.name, slot.name, slot.name, want, slot_tensor(slot, e.value.detach()), false);
        torch::Tensor m1, m2;
        if (optimizer) {
            m1 = slot_tensor(slot, same_view(e, optimizer->exp_avg(e.group)));
            m2 = slot_tensor(slot, same_view(e, optimizer->exp_avg_sq(e.group)));
        }
        stage(in_optim, "/optim/" + slot.name + "/exp_avg", slot.name, slot.name + "/exp_avg", want, m1, false);
        stage(in_optim, "/optim/" + slot.name + "/exp_avg_sq", slot.name, slot.name + "/exp_avg_sq", want, m2, true);
    }

    // The sync state (one shard: every rank saves its own), all of it or none.
    const bool has_sync_state = !sync_state.empty() &&
                                files.front().exists("/state/" + sync_state.front().name.substr(0, sync_state.front().name.find('/')));
    std::vector<int64_t> counter_values;
    if (has_sync_state) {
        for (const auto& t : sync_state)
            stage_from(&files.front(), "/state/" + t.name, "/state/" + t.name, t.value.sizes().vec(), t.value, false);
        for (const auto& c : sync_counters)
            counter_values.push_back(counter(files.front(), "/state/sync_counters", c.name, c.lo, c.hi));
    }

    // 3. The training state, every counter in range and consistent (the optimizer stepped on
    // every step that was not skipped).
    Hdf5File& f = files.front();   // training state: the same in every shard
    TrainingState st;
    st.step = counter(f, "/state/schedule", "step");
    st.tokens = counter(f, "/state/counters", "tokens");
    st.skipped_steps = counter(f, "/state/counters", "skipped_steps", 0, st.step);
    st.bad_steps_in_a_row = counter(f, "/state/counters", "bad_steps_in_a_row", 0, st.skipped_steps);
    st.train_seconds = f.attribute_double("/state/counters", "train_seconds");
    if (!std::isfinite(st.train_seconds) || st.train_seconds < 0)
        throw CheckpointError(fmt::format("{}: /state/counters@train_seconds is {}", f.path(), st.train_seconds));
    st.data.next_sample = uint64_t(counter(f, "/state/data", "next_sample"));
    // The optimizer steps on every step that is not skipped: no more steps than the schedule's,
    // and (for a resume, where the two must go on together) exactly those.
    const int64_t optimizer_steps = counter(f, "/optim", "step", 0, st.step);
    if (optimizer && optimizer_steps + st.skipped_steps != st.step)
        throw CheckpointError(fmt::format("{}: {} optimizer steps and {} skipped steps do not add up to step {} (a "
                                          "relabelled checkpoint?)",
                                          f.path(), optimizer_steps, st.skipped_steps, st.step));
    if (const int64_t step_attr = f.attribute_int("/", "step"); step_attr != st.step)
        throw CheckpointError(fmt::format("{}: the shard says step {} but its schedule is at step {}", f.path(),
                                          step_attr, st.step));
    // The generator's state has one size for a given libtorch; anything else is not ours.
    // (Checked where the state is wanted: a model-only load ignores it.)
    const int64_t rng_bytes = int64_t(torch_rng_state().size());
    st.torch_rng = f.read_bytes("/state/rng/torch_cpu", rng_bytes);
    if (state && int64_t(st.torch_rng.size()) != rng_bytes)
        throw CheckpointError(fmt::format("{}: /state/rng/torch_cpu holds {} bytes, the generator's state is {}", f.path(),
                                          st.torch_rng.size(), rng_bytes));

    // 4. Commit.
    for (auto& s : staged) s.dst.copy_(s.value);
    for (size_t i = 0; i < counter_values.size(); ++i) *sync_counters[i].value = counter_values[i];
    if (optimizer) optimizer->set_step_count(optimizer_steps);
    if (state) *state = st;
    return has_sync_state;
}

}  // namespace

}  // namespace moe
