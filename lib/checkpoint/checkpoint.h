// Checkpoints: one directory per step, one HDF5 shard per rank, a manifest written last.
//
//   <root>/step-00001200/rank-00000.h5   /model/<HF name>, /optim/<HF name>/{exp_avg,exp_avg_sq},
//                                        /state/{rng,data,schedule,counters}, root attributes
//   <root>/step-00001200/manifest.yaml   step, world, config + hash, size and SHA-256 per shard
//   <root>/LATEST                        name of the newest complete checkpoint
//
// Commit protocol (why a killed process never leaves a checkpoint that looks valid but is not):
// shards go to <root>/.tmp-step-N/ and are fsynced; the manifest is written last (temp, fsync,
// rename); the directory is renamed to step-N and the root fsynced; LATEST is replaced by
// temp + rename. A directory without a manifest whose sizes and checksums match is never
// loaded; leftover .tmp-* directories are removed at start-up. See docs/checkpoint-format.md.
#pragma once

#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "moe/model_config.h"
#include "moe/parameter_store.h"
#include "parallel/communicator.h"
#include "optim/optimizer.h"
#include "data/data_source.h"

namespace moe {

inline constexpr const char* kCheckpointFormat = "moe-train-checkpoint";
inline constexpr int64_t kCheckpointVersion = 1;

// Everything besides tensors that a resumed run needs to continue bit for bit.
struct TrainingState {
    int64_t step = 0;                 // steps completed = index of the next step (also the LR schedule position)
    int64_t tokens = 0;               // tokens trained on so far
    int64_t skipped_steps = 0;        // non-finite losses skipped in total
    int64_t bad_steps_in_a_row = 0;   // the NaN-skip counter
    double train_seconds = 0;
    DataPosition data;
    std::vector<uint8_t> torch_rng;   // libtorch's default CPU generator state
};

// What the manifest says about the run that wrote a checkpoint.
struct CheckpointIdentity {
    std::string config_yaml;   // resolved config (moe-eval rebuilds the model from it)
    std::string config_hash;   // model_config_hash of the config (reported when a resume differs)
    ModelConfig model;         // written as attributes of /model so h5py alone can rebuild it
    int64_t world_size = 1, pp = 1, dp = 1, ep = 1;
    std::string host;          // per-host storage: the host whose manifest this is (empty: shared storage)
};

// CPU copies of everything to save, taken synchronously so training can go on while a
// background thread writes them (the "staging copy").
struct CheckpointSnapshot {
    struct Named {
        std::string name;      // HF name
        torch::Tensor value;   // contiguous float32, HF shape
    };
    std::vector<Named> model, exp_avg, exp_avg_sq;
    // The replica-sync strategy's state (compression: error buffers, Q factors, ranks), each
    // stored as /state/<name>; float32.
    std::vector<Named> sync_state;
    // Its integer counters (asynchronous SGD: tokens merged, window position, ...), each stored
    // as an int64 attribute of /state/sync_counters.
    std::vector<std::pair<std::string, int64_t>> sync_counters;
    int64_t optimizer_steps = 0;
    TrainingState state;
};

// libtorch's default CPU generator state as bytes, and back.
std::vector<uint8_t> torch_rng_state();
void set_torch_rng_state(const std::vector<uint8_t>& bytes);

// A contiguous CPU copy of `t` (from any device): what a snapshot holds.
torch::Tensor staging_copy(const torch::Tensor& t);
CheckpointSnapshot take_snapshot(const ParameterStore& params, Optimizer& optimizer, const TrainingState& state);

// Per-tensor HF names and shapes of a store, with stacked experts expanded to one entry each.
struct TensorSlot {
    std::string name;
    const ParamEntry* entry;
    int64_t slice;   // stacked experts: the slice; -1 otherwise
};
std::vector<TensorSlot> tensor_slots(const ParameterStore& params);
// The slot's tensor within `full` (the entry's value, or a buffer laid out like it).
torch::Tensor slot_tensor(const TensorSlot& s, const torch::Tensor& full);

std::string step_dir_name(int64_t step);        // "step-00001200"
std::string shard_file_name(int64_t rank);      // "rank-00000.h5"

enum class VerifyStatus { ok = 0, no_manifest = 10, bad_manifest = 11, missing_shard = 12, size_mismatch = 13, checksum_mismatch = 14 };

struct VerifyResult {
    VerifyStatus status = VerifyStatus::ok;
    std::string message;   // names the file and what is wrong
    bool ok() const { return status == VerifyStatus::ok; }
};

// Checks the manifest and every shard's size and SHA-256.
VerifyResult verify_checkpoint(const std::string& dir);
YAML::Node read_manifest(const std::string& dir);

// Loads parameters (and, when given, optimizer state and training state) from a verified
// checkpoint into a model built from the same config. Nothing changes unless all of it checks:
// the checkpoint's tensors and the model's are the same set (both ways), every dtype and shape
// matches (checked before allocating), values are finite (second moments non-negative), storage
// is inside the shard, and every counter is in range and consistent. Errors name file and dataset.
void load_checkpoint(const std::string& dir, int64_t rank, ParameterStore& params, Optimizer* optimizer,
                     TrainingState* state);

// A tensor of the replica-sync state to load: /state/<name>, with `value`'s shape (copied into it).
struct SyncStateTensor {
    std::string name;
    torch::Tensor value;
};
// A counter of the replica-sync state to load: /state/sync_counters@<name>, in [lo, hi],
// written to *value (a live counter of the strategy) only when everything loaded.
struct SyncCounter {
    std::string name;
    int64_t* value;
    int64_t lo = 0, hi = INT64_MAX;
};
// load_checkpoint plus the sync state, checked and committed with the rest. Returns false (and
// leaves the tensors and counters as they are) when the shard holds none of it: a run that
// starts compressing from a checkpoint written without compression. The shard holds the state
// when it has /state/<first segment of the first tensor's name>.
bool load_checkpoint_with_sync_state(const std::string& dir, int64_t rank, ParameterStore& params, Optimizer& optimizer,
                                     TrainingState& state, const std::vector<SyncStateTensor>& sync_state,
                                     const std::vector<SyncCounter>& sync_counters = {});
// The same from several shards: each tensor is read from the first shard that holds it (an
// expert-parallel checkpoint spreads the experts over the shards); state from the first.
void load_checkpoint_shards(const std::string& dir, const std::vector<int64_t>& ranks, ParameterStore& params,
                            Optimizer* optimizer, TrainingState* state);
// The same from shard files named by path (per-host storage: one step's shards spread over the
// hosts' folders).
void load_checkpoint_files(const std::vector<std::string>& paths, ParameterStore& params, Optimizer* optimizer,
                           TrainingState* state);

class CheckpointStore {
   public:
    CheckpointStore(std::string root, int64_t keep, CheckpointIdentity identity, int64_t rank = 0);
    ~CheckpointStore();   // waits for a save in flight (errors are logged, not thrown)

    const std::string& root() const { return root_; }

    // Removes .tmp-* directories left by a killed process.
    void remove_stale_temporaries();

    // Writes and commits synchronously; returns the checkpoint directory.
    std::string save(const CheckpointSnapshot& snapshot);
    // Starts a background save of `snapshot` after waiting for the previous one (at most one
    // in flight). Errors surface from the next wait()/save_async().
    void save_async(CheckpointSnapshot snapshot);
    // Waits for the save in flight; rethrows its error.
    void wait();

    // Complete step directories whose manifest and checksums verify, newest first (whatever
    // LATEST says: it is a hint naming a sibling step-* folder). What LATEST says otherwise and
    // why newer folders fail are appended to `notes`.
    std::vector<std::string> candidates(std::vector<std::string>* notes = nullptr) const;
    // The first of candidates(), if any.
    std::optional<std::string> latest_valid(std::vector<std::string>* notes = nullptr) const;
    // Complete step directories (with a manifest), newest first.
    std::vector<std::string> list_steps() const;

    // The multi-rank commit (DESIGN.md section 7), called by every rank of `world` together.
    // `host` is this rank's group of ranks that see the same checkpoint folder: the world itself
    // on shared storage, the ranks of one host on per-host storage. Rank 0 of each host group
    // prepares the temporary folder, every `writer` writes its shard (rank-<world rank>), all of
    // the world agree on success (a failure anywhere fails the save everywhere, never a hang),
    // then each host group's rank 0 writes the manifest listing its group's shards (size and
    // SHA-256), renames, updates LATEST and prunes. `snapshot` needs tensors only on writers.
    // Returns the checkpoint directory.
    std::string save_collective(const CheckpointSnapshot& snapshot, Communicator& world, Communicator& host, bool writer);
    // The same in a background thread (after waiting for the save before it; errors surface
    // from the next wait()): the caller goes on training. `world` and `host` must be
    // communicators no other thread uses (duplicates), and MPI must allow threads (MPI_THREAD_MULTIPLE).
    void save_collective_async(CheckpointSnapshot snapshot, Communicator& world, Communicator& host, bool writer);

   private:
    struct ShardRecord {
        std::string name;
        int64_t rank;
        uint64_t bytes;
        std::string sha256;
    };
    void write_manifest(const std::string& tmp, const CheckpointSnapshot& s, const std::vector<ShardRecord>& shards) const;
    // Writes and fsyncs one shard; returns its SHA-256.
    std::string write_shard(const std::string& path, const CheckpointSnapshot& s) const;
    void prune();

    std::string root_;
    int64_t keep_;
    CheckpointIdentity identity_;
    int64_t rank_;
    std::thread worker_;
    std::exception_ptr worker_error_;
};

// checkpoint.dir when set; else on a Fly.io machine (FLY_APP_NAME set) with a volume mounted at
// `fly_volume`, <fly_volume>/checkpoints/<run-id>; else <run-dir>/checkpoints.
std::string default_checkpoint_dir(const std::string& configured, const std::string& run_dir, const std::string& run_id,
                                   const std::string& fly_volume = "/data");

}  // namespace moe
