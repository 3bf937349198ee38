// CheckpointStore::save_collective: the commit protocol of checkpoint.cpp with one shard per
// writing rank. Every step ends in an agreement (MAX all-reduce of a failure flag), so a rank
// that fails makes every rank throw instead of leaving peers waiting.
#include <filesystem>

#include "common/crash_point.h"
#include "common/error.h"
#include "checkpoint/checkpoint.h"
#include "common/file_io.h"

namespace fs = std::filesystem;

namespace moe {

namespace {

// Throws on every rank when any rank reported an error; the failing rank's message where it is known.
void agree(Communicator& world, const std::string& error, const std::string& what) {
    auto failed = torch::tensor({int64_t(error.empty() ? 0 : 1)});
    world.all_reduce(failed, ReduceOp::max);
    if (failed.item<int64_t>() == 0) return;
    throw CheckpointError(error.empty() ? fmt::format("{}: another rank failed (see its message)", what) : error);
}

// A shard's record as 6 int64: bytes, the 32 bytes of the SHA-256, the writer's rank (0 bytes:
// not a writer).
constexpr int64_t kRecordWords = 6;

torch::Tensor pack_record(uint64_t bytes, const std::string& sha_hex, int64_t rank) {
    auto t = torch::zeros({kRecordWords}, torch::kInt64);
    auto* w = t.data_ptr<int64_t>();
    w[0] = int64_t(bytes);
    w[5] = rank;
    auto* raw = reinterpret_cast<uint8_t*>(w + 1);
    for (size_t i = 0; i + 1 < sha_hex.size() && i / 2 < 32; i += 2) raw[i / 2] = uint8_t(std::stoi(sha_hex.substr(i, 2), nullptr, 16));
    return t;
}

std::string unpack_sha(const int64_t* words) {
    const auto* raw = reinterpret_cast<const uint8_t*>(words + 1);
    std::string hex;
    for (int i = 0; i < 32; ++i) hex += fmt::format("{:02x}", raw[i]);
    return hex;
}

}  // namespace

std::string CheckpointStore::save_collective(const CheckpointSnapshot& s, Communicator& world, Communicator& host,
                                            bool writer) {
    const bool leader = host.rank() == 0;   // commits this folder: rank 0 of the world, or of each host
    const std::string name = step_dir_name(s.state.step);
    const std::string tmp = root_ + "/.tmp-" + name, final_dir = root_ + "/" + name;
    const std::string what = fmt::format("saving checkpoint {}", final_dir);
    auto failure = [&](const std::exception& e) {
        return fmt::format("{} failed on rank {}: {} (the previous checkpoint stays valid)", what, world.rank(), e.what());
    };
    auto cleanup_and_agree = [&](const std::string& error) {
        try {
            agree(world, error, what);
        } catch (...) {
            std::error_code ignored;
            if (leader) fs::remove_all(tmp, ignored);
            throw;
        }
    };

    std::string error;
    if (leader) {
        try {
            fs::create_directories(root_);
            fs::remove_all(tmp);
            fs::create_directories(tmp);
        } catch (const fs::filesystem_error& e) {
            error = fmt::format("{}: cannot create checkpoint directory: {}", tmp, e.code().message());
        }
    }
    cleanup_and_agree(error);

    torch::Tensor record = torch::zeros({kRecordWords}, torch::kInt64);
    if (writer) {
        try {
            const std::string shard = tmp + "/" + shard_file_name(rank_);
            const std::string sha = write_shard(shard, s);
            record = pack_record(uint64_t(fs::file_size(shard)), sha, rank_);
        } catch (const std::exception& e) {
            error = failure(e);
        }
    }
    cleanup_and_agree(error);

    const torch::Tensor records = host.all_gather(record);   // [host group, kRecordWords]
    if (leader) {
        try {
            std::vector<ShardRecord> shards;
            for (int64_t r = 0; r < host.size(); ++r) {
                const int64_t* w = records[r].data_ptr<int64_t>();
                if (w[0] > 0) shards.push_back({shard_file_name(w[5]), w[5], uint64_t(w[0]), unpack_sha(w)});
            }
            if (shards.empty()) throw CheckpointError("no rank wrote a shard");
            crash_point("save:after-shards");
            write_manifest(tmp, s, shards);
            crash_point("save:after-manifest");
            // A step is saved once (the trainer never relabels one), but a folder of the same
            // step may be left from a run that was resumed from an older checkpoint.
            if (fs::exists(final_dir)) {
                const std::string old = root_ + "/.tmp-replaced-" + name;
                fs::remove_all(old);
                rename_durably(final_dir, old);
                fs::remove_all(old);
            }
            rename_durably(tmp, final_dir);
            crash_point("save:after-rename");
            // LATEST is replaced by rename; anything that is not a file there (a folder) goes first.
            const std::string latest = root_ + "/LATEST";
            if (std::error_code ec; fs::exists(fs::symlink_status(latest, ec)) && !fs::is_regular_file(fs::symlink_status(latest, ec)))
                fs::remove_all(latest);
            write_file_atomically(latest, name + "\n");
        } catch (const std::exception& e) {
            error = failure(e);
        }
    }
    cleanup_and_agree(error);
    if (leader) prune();
    return final_dir;
}

}  // namespace moe
