// Checkpoints (lib/checkpoint/checkpoint*.cpp, hdf5_file.cpp, lib/common/file_io.cpp) and resume through the
// Trainer: a run stopped and resumed is bit-for-bit the run that never stopped (per-step losses and
// the SHA-256 of every final parameter), through an eval and a data-epoch boundary and with async
// saves; corrupted or incomplete checkpoints are never loaded; shape mismatches name the tensor;
// a failing save (full disk, unwritable folder) leaves the previous checkpoint valid.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/error.h"
#include "temp_dir.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_model.h"
#include "checkpoint/hdf5_file.h"
#include "common/file_io.h"
#include "train/trainer.h"

using namespace moe;
using moe::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A small model on a small llm.c token file: 40 steps of 4 x 16 tokens visit ~1.4 epochs of the
// 112 training windows, and evals run after steps 15 and 30.
// An llm.c token shard of `n` pseudo-random tokens below 48.
std::string token_shard(size_t n, uint32_t seed) {
    int32_t header[256] = {20240520, 1, int32_t(n)};
    std::vector<uint16_t> tokens(n);
    for (auto& t : tokens) t = uint16_t((seed = seed * 1103515245u + 12345u) >> 16) % 48;
    std::string bin(reinterpret_cast<const char*>(header), sizeof header);
    bin.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
    return bin;
}

std::string small_config(const TempDir& dir, const std::string& extra = "") {
    const std::string train = dir.write("train.bin", token_shard(1800, 1)), eval = dir.write("eval.bin", token_shard(200, 2));
    return fmt::format(R"(model: {{vocab_size: 48, d_model: 32, n_layers: 2, n_heads: 2, n_kv_heads: 1, max_seq_len: 16}}
moe: {{num_experts: 4, top_k: 2, ffn_hidden: 32}}
data: {{source: bin, path: "{}", eval_path: "{}"}}
optim: {{lr: 0.01, warmup_steps: 5}}
train: {{steps: 40, batch_size: 4, seq_len: 16, eval_every: 15, eval_batches: 2, log_every: 1000, threads: 1}}
checkpoint: {{every: 10}}
{})",
                       train, eval, extra);
}

int train(const std::string& yaml, const std::string& run_dir, std::string resume = "auto", int64_t stop_after = 0,
          const std::vector<std::string>& overrides = {}) {
    RunOptions o;
    o.run_dir = run_dir;
    o.resume = std::move(resume);
    o.stop_after = stop_after;
    Trainer t(parse_config(yaml, "checkpoint_test.yaml", overrides), "checkpoint_test", o);
    return t.run();
}

// step -> "loss,aux_loss,z_loss,lr,grad_norm,eval_loss" from metrics.csv (timings left out).
std::map<int64_t, std::string> losses(const std::string& run_dir) {
    std::ifstream in(run_dir + "/metrics.csv");
    std::string line;
    std::getline(in, line);
    std::map<int64_t, std::string> out;
    while (std::getline(in, line)) {
        std::vector<std::string> c;
        std::stringstream ss(line);
        for (std::string cell; std::getline(ss, cell, ',');) c.push_back(cell);
        c.resize(12);
        out[std::stoll(c[0])] = c[1] + "," + c[2] + "," + c[3] + "," + c[4] + "," + c[5] + "," + c[11];
    }
    return out;
}

// HF name -> SHA-256 of the tensor's bytes, for a checkpoint's parameters.
std::map<std::string, std::string> parameter_hashes(const std::string& checkpoint) {
    LoadedCheckpoint ck = load_model_checkpoint(checkpoint);
    std::map<std::string, std::string> out;
    for (const auto& slot : tensor_slots(ck.model->params())) {
        auto t = slot_tensor(slot, slot.entry->value).contiguous();
        out[slot.name] = sha256_bytes(t.data_ptr<float>(), size_t(t.numel()) * 4);
    }
    return out;
}

std::string latest(const std::string& root) {
    std::string s = read_file(root + "/LATEST");
    return s.substr(0, s.find('\n'));
}

void flip_byte(const std::string& path, size_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(offset));
    char c = 0;
    f.read(&c, 1);
    c = char(c ^ 0x5a);
    f.seekp(std::streamoff(offset));
    f.write(&c, 1);
}

// The small model with an optimizer and a checkpoint store under <dir>/ck, for store-level tests.
struct Saver {
    explicit Saver(const TempDir& dir)
        : cfg(parse_config(small_config(dir), "t")),
          model(cfg.model, std::make_shared<LocalDispatcher>(4), 1),
          opt(model.params(), cfg.optim),
          store(dir.path("ck"), 2, {"", "h"}) {}
    Config cfg;
    MoeTransformer model;
    Optimizer opt;
    CheckpointStore store;
    TrainingState st;
};

}  // namespace

TEST_CASE("40 steps straight equal 20 + resume + 20, through eval and epoch boundaries, sync and async") {
    for (const char* async : {"false", "true"}) {
        CAPTURE(async);
        TempDir dir("moe_ckpt_test");
        const std::string yaml = small_config(dir);
        const std::vector<std::string> set = {fmt::format("checkpoint.async={}", async)};
        const std::string straight = dir.path("straight"), resumed = dir.path("resumed");
        REQUIRE(train(yaml, straight, "never", 0, set) == 0);
        REQUIRE(train(yaml, resumed, "auto", 20, set) == 0);
        CHECK(latest(resumed + "/checkpoints") == "step-00000020");
        const auto first_half = losses(resumed);
        CHECK(first_half.size() == 20);
        REQUIRE(train(yaml, resumed, "auto", 0, set) == 0);

        const auto a = losses(straight), b = losses(resumed);
        CHECK(a.size() == 40);
        CHECK(a == b);
        for (const auto& [step, row] : first_half) CHECK(b.at(step) == row);
        CHECK(a.at(14).substr(a.at(14).rfind(',') + 1) != "");   // an eval ran before the stop...
        CHECK(a.at(29).substr(a.at(29).rfind(',') + 1) != "");   // ...and one after the resume

        // The stop (80 samples in) is before the end of the first epoch of 112 windows; the resumed
        // half crosses it.
        auto data = make_data_source(parse_config(yaml, "t").data, 16, 42, 0, 1);
        data->set_position({80});
        CHECK(data->epoch() == 0);
        data->set_position({160});
        CHECK(data->epoch() == 1);

        const auto ha = parameter_hashes(straight + "/checkpoints"), hb = parameter_hashes(resumed + "/checkpoints");
        CHECK(ha.size() > 10);
        CHECK(ha == hb);

        const YAML::Node rec = YAML::LoadFile(resumed + "/record.yaml");
        CHECK(rec["status"].as<std::string>() == "completed");
        CHECK(rec["resumed_from"].as<std::string>() == resumed + "/checkpoints/step-00000020");
        CHECK(rec["summary"]["tokens"].as<int64_t>() == 40 * 4 * 16);
    }
}

TEST_CASE("the shard holds every tensor and the training state, and the manifest describes it") {
    TempDir dir("moe_ckpt_test");
    const std::string run = dir.path("run");
    REQUIRE(train(small_config(dir), run, "never", 25) == 0);
    const std::string step = run + "/checkpoints/step-00000025";
    CHECK(verify_checkpoint(step).ok());
    const YAML::Node m = read_manifest(step);
    CHECK(m["step"].as<int64_t>() == 25);
    CHECK(m["files"][0]["name"].as<std::string>() == "rank-00000.h5");
    CHECK(m["files"][0]["sha256"].as<std::string>() == sha256_file(step + "/rank-00000.h5"));
    CHECK(m["config"]["model"]["d_model"].as<int64_t>() == 32);

    TrainingState st;
    Config cfg = parse_config(small_config(dir), "t");
    MoeTransformer model(cfg.model, std::make_shared<LocalDispatcher>(4), 1);
    Optimizer opt(model.params(), cfg.optim);
    load_checkpoint(step, 0, model.params(), &opt, &st);
    CHECK(st.step == 25);
    CHECK(opt.step_count() == 25);
    CHECK(st.tokens == 25 * 4 * 16);
    CHECK(st.data.next_sample == 25 * 4);
    CHECK(st.torch_rng.size() > 100);
    CHECK(opt.exp_avg_sq(ParamGroup::expert).abs().sum().item<double>() > 0);
}

TEST_CASE("a flipped byte fails verification naming the file, and resume falls back to the previous checkpoint") {
    TempDir dir("moe_ckpt_test");
    const std::string yaml = small_config(dir), run = dir.path("run"), root = run + "/checkpoints";
    REQUIRE(train(yaml, run, "never", 30) == 0);   // saves at 10, 20, 30; keeps 20 and 30
    CHECK(!fs::exists(root + "/step-00000010"));
    const std::string shard = root + "/step-00000030/rank-00000.h5";
    flip_byte(shard, fs::file_size(shard) / 2);

    VerifyResult v = verify_checkpoint(root + "/step-00000030");
    CHECK(v.status == VerifyStatus::checksum_mismatch);
    CHECK(v.message.find(shard) != std::string::npos);

    CheckpointStore store(root, 2, {});
    std::vector<std::string> skipped;
    CHECK(store.latest_valid(&skipped) == root + "/step-00000020");
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0].find("SHA-256") != std::string::npos);

    REQUIRE(train(yaml, run, "auto") == 0);
    const YAML::Node rec = YAML::LoadFile(run + "/record.yaml");
    CHECK(rec["resumed_from"].as<std::string>() == root + "/step-00000020");
    CHECK(losses(run).size() == 40);
}

TEST_CASE("incomplete checkpoints are never loaded; leftover temporaries are removed") {
    TempDir dir("moe_ckpt_test");
    const std::string yaml = small_config(dir), run = dir.path("run"), root = run + "/checkpoints";
    REQUIRE(train(yaml, run, "never", 10) == 0);
    // A save killed before its manifest, and one killed before the rename.
    fs::create_directories(root + "/step-00000020");
    fs::copy_file(root + "/step-00000010/rank-00000.h5", root + "/step-00000020/rank-00000.h5");
    fs::create_directories(root + "/.tmp-step-00000030");
    CHECK(verify_checkpoint(root + "/step-00000020").status == VerifyStatus::no_manifest);

    CheckpointStore store(root, 2, {});
    CHECK(store.latest_valid() == root + "/step-00000010");
    store.remove_stale_temporaries();
    CHECK(!fs::exists(root + "/.tmp-step-00000030"));

    // A manifest whose listed size is wrong, and one that is not YAML.
    write_file_atomically(root + "/step-00000020/manifest.yaml",
                          "format: moe-train-checkpoint\nfiles:\n  - {name: rank-00000.h5, rank: 0, bytes: 7, sha256: x}\n");
    CHECK(verify_checkpoint(root + "/step-00000020").status == VerifyStatus::size_mismatch);
    write_file_atomically(root + "/step-00000020/manifest.yaml", "format: [unclosed\n");
    CHECK(verify_checkpoint(root + "/step-00000020").status == VerifyStatus::bad_manifest);
    fs::remove(root + "/step-00000020/rank-00000.h5");
    write_file_atomically(root + "/step-00000020/manifest.yaml",
                          "format: moe-train-checkpoint\nfiles:\n  - {name: rank-00000.h5, rank: 0, bytes: 7, sha256: x}\n");
    CHECK(verify_checkpoint(root + "/step-00000020").status == VerifyStatus::missing_shard);
    CHECK(store.latest_valid() == root + "/step-00000010");
}

TEST_CASE("loading into a model of another shape names the tensor and both shapes") {
    TempDir dir("moe_ckpt_test");
    const std::string run = dir.path("run");
    REQUIRE(train(small_config(dir), run, "never", 10) == 0);
    std::string msg;
    try {
        train(small_config(dir), run, "auto", 0, {"moe.ffn_hidden=48"});
    } catch (const CheckpointError& e) {
        msg = e.what();
    }
    CAPTURE(msg);
    CHECK(msg.find("model.layers.0.block_sparse_moe.experts.0.w1.weight") != std::string::npos);
    CHECK(msg.find("[32, 32] in the checkpoint but [48, 32] in the model") != std::string::npos);
}

TEST_CASE("a checkpoint root without any valid checkpoint refuses to start over beside it") {
    TempDir dir("moe_ckpt_test");
    const std::string run = dir.path("run"), root = run + "/checkpoints";
    REQUIRE(train(small_config(dir), run, "never", 10) == 0);
    flip_byte(root + "/step-00000010/rank-00000.h5", 100);
    CHECK_THROWS_WITH_AS(train(small_config(dir), run, "auto"), doctest::Contains("no checkpoint verifies"), CheckpointError);
    CHECK(train(small_config(dir), run, "never", 5) == 0);   // the user's explicit choice
}

TEST_CASE("a save that fails (full disk) throws, leaves no temporary and keeps the previous checkpoint") {
    TempDir dir("moe_ckpt_test");
    Saver saver(dir);
    auto& [cfg, model, opt, store, st] = saver;
    st.step = 1;
    store.save(take_snapshot(model.params(), opt, st));

    // RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk fails them with ENOSPC.
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    small.rlim_cur = 64 * 1024;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
    st.step = 2;
    std::string msg;
    try {
        store.save(take_snapshot(model.params(), opt, st));
    } catch (const CheckpointError& e) {
        msg = e.what();
    }
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    std::signal(SIGXFSZ, old_handler);
    CAPTURE(msg);
    CHECK(msg.find("step-00000002") != std::string::npos);
    CHECK(msg.find("previous checkpoint stays valid") != std::string::npos);
    CHECK(!fs::exists(dir.path("ck/.tmp-step-00000002")));
    CHECK(!fs::exists(dir.path("ck/step-00000002")));
    CHECK(latest(dir.path("ck")) == "step-00000001");
    CHECK(store.latest_valid() == dir.path("ck/step-00000001"));

    // An unwritable location: a path below a regular file.
    CheckpointStore bad(dir.write("file", "x") + "/ck", 2, {});
    CHECK_THROWS_WITH_AS(bad.save(take_snapshot(model.params(), opt, st)), doctest::Contains("cannot create"),
                         CheckpointError);
}

TEST_CASE("async save: the snapshot is a copy, so training on does not change what is written") {
    TempDir dir("moe_ckpt_test");
    Saver saver(dir);
    auto& [cfg, model, opt, store, st] = saver;
    st.step = 3;
    const auto before = model.params().values(ParamGroup::dense).clone();
    store.save_async(take_snapshot(model.params(), opt, st));
    model.params().values(ParamGroup::dense).add_(1.0);   // "training" while the save runs
    store.wait();

    MoeTransformer reloaded(cfg.model, std::make_shared<LocalDispatcher>(4), 2);
    load_checkpoint(dir.path("ck/step-00000003"), 0, reloaded.params(), nullptr, nullptr);
    CHECK(torch::equal(reloaded.params().values(ParamGroup::dense), before));
}

TEST_CASE("the default checkpoint folder: configured, else the Fly volume, else under the run") {
    TempDir volume("moe_fly_volume");
    ::unsetenv("FLY_APP_NAME");
    CHECK(default_checkpoint_dir("/x/ck", "runs/a", "a", volume.path()) == "/x/ck");
    CHECK(default_checkpoint_dir("", "runs/a", "a", volume.path()) == "runs/a/checkpoints");
    ::setenv("FLY_APP_NAME", "moe-train-test", 1);
    CHECK(default_checkpoint_dir("", "runs/a", "a", volume.path()) == volume.path() + "/checkpoints/a");
    CHECK(default_checkpoint_dir("/x/ck", "runs/a", "a", volume.path()) == "/x/ck");
    CHECK(default_checkpoint_dir("", "runs/a", "a", volume.path("absent")) == "runs/a/checkpoints");   // no volume
    ::unsetenv("FLY_APP_NAME");
}

TEST_CASE("loading a tensor stored with another dtype names the tensor and both dtypes") {
    TempDir dir("moe_ckpt_test");
    Saver saver(dir);
    saver.st.step = 1;
    const std::string step = saver.store.save(take_snapshot(saver.model.params(), saver.opt, saver.st));
    // Replace one parameter by a float64 dataset of the same shape (as another tool might write it).
    initialise_hdf5();
    hid_t f = H5Fopen((step + "/rank-00000.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    REQUIRE(H5Ldelete(f, "/model/model.norm.weight", H5P_DEFAULT) >= 0);
    hsize_t n = 32;
    std::vector<double> ones(32, 1.0);
    hid_t space = H5Screate_simple(1, &n, nullptr);
    hid_t set = H5Dcreate2(f, "/model/model.norm.weight", H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(set >= 0);
    REQUIRE(H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, ones.data()) >= 0);
    H5Dclose(set);
    H5Sclose(space);
    REQUIRE(H5Fclose(f) >= 0);
    CHECK_THROWS_WITH_AS(load_checkpoint(step, 0, saver.model.params(), nullptr, nullptr),
                         doctest::Contains("tensor 'model.norm.weight' has dtype float64 in the checkpoint but float32"),
                         CheckpointError);
}
