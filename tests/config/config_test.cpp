// Configuration loading (lib/config/config*.cpp): a table of bad YAML files and bad
// --set overrides, each of which must throw ConfigError whose message names the key path and
// where the value came from (file:line, or the override); and the good paths: configs/tiny.yaml loads, --set changes a value,
// config_to_yaml round-trips through parse_config, and model_config_hash covers only the model.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "temp_dir.h"
#include "config/config.h"
#include "config/config_schema.h"
#include "common/file_io.h"

using namespace moe;
using moe::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kTiny = std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml";

// A fresh directory under the system temp dir, removed with its contents on destruction.
// The message of the ConfigError thrown by `fn`; fails the test (and returns "") if it throws
// nothing or something else.
template <typename Fn>
std::string config_error_of(Fn&& fn) {
    try {
        fn();
    } catch (const ConfigError& e) {
        return e.what();
    } catch (const std::exception& e) {
        FAIL_CHECK("threw a non-ConfigError: " << e.what());
        return "";
    }
    FAIL_CHECK("no ConfigError thrown");
    return "";
}

// True when `msg` contains "<file>:<line>" not followed by another digit (so line 1 is not
// satisfied by line 12).
bool has_location(const std::string& msg, const std::string& file, int line) {
    const std::string loc = file + ":" + std::to_string(line);
    for (size_t at = msg.find(loc); at != std::string::npos; at = msg.find(loc, at + 1)) {
        const size_t end = at + loc.size();
        if (end == msg.size() || !std::isdigit(static_cast<unsigned char>(msg[end]))) return true;
    }
    return false;
}

struct BadConfig {
    const char* name;
    const char* yaml;                    // the file's text; line 1 starts right after R"(
    std::vector<std::string> overrides;  // --set assignments, applied after the file
    std::string key;                     // key path the message must name ("" = none applies)
    std::vector<int> lines;              // file lines the message must point at
    std::vector<std::string> also;       // further substrings the message must contain
};

// Every case here is rejected by load_config itself. For --set cases the message must also
// quote the (last) override.
const std::vector<BadConfig> kBadConfigs = {
    // ---- single keys: unknown, wrong type, out of range
    {"unknown key with a suggestion", R"(model:
  n_head: 4
)", {}, "model.n_head", {2}, {"unknown key", "did you mean model.n_heads?"}},
    {"unknown section with a suggestion", R"(train:
  steps: 5
modle:
  n_heads: 4
)", {}, "modle", {3}, {"unknown key", "did you mean model?"}},
    {"wrong type: a word for an integer", R"(model:
  d_model: 128
  n_heads: four
)", {}, "model.n_heads", {3}, {"expected a positive integer", "\"four\""}},
    {"wrong type: trailing garbage on an integer", R"(train:
  steps: 10x
)", {}, "train.steps", {2}, {"\"10x\""}},
    {"wrong type: a map for a number", R"(optim:
  lr: {peak: 0.1}
)", {}, "optim.lr", {2}, {"got a map"}},
    {"wrong type: not a boolean", R"(model:
  tie_embeddings: maybe
)", {}, "model.tie_embeddings", {2}, {"true or false"}},
    {"wrong type: scalar for a list", R"(parallel:
  partition: 3
)", {}, "parallel.partition", {2}, {"a list of positive integers"}},
    {"missing value", R"(model:
  d_model: 128
  n_heads:
)", {}, "model.n_heads", {3}, {"got nothing"}},
    {"section is not a map", R"(# comment line
train:
  steps: 5
model: 5
)", {}, "model", {4}, {"expected a map of keys"}},
    {"zero layers", R"(train:
  steps: 10
model:
  n_layers: 0
)", {}, "model.n_layers", {4}, {"a positive integer", "\"0\""}},
    {"negative learning rate", R"(optim:
  lr: -3.0e-3
)", {}, "optim.lr", {2}, {"a number > 0"}},
    {"beta1 at the open upper bound", R"(optim:
  warmup_steps: 3
  beta1: 1.0
)", {}, "optim.beta1", {3}, {"a number in [0, 1)"}},
    {"eval_fraction of 1", R"(data:
  eval_fraction: 1.0
)", {}, "data.eval_fraction", {2}, {"a number in (0, 1)"}},
    {"threads above the cap", R"(train:
  threads: 5000
)", {}, "train.threads", {2}, {"an integer in [0, 4096]"}},
    {"keep fewer than two checkpoints", R"(checkpoint:
  every: 10
  keep: 1
)", {}, "checkpoint.keep", {3}, {"\"1\""}},
    {"synthetic vocab of one", R"(data:
  synthetic:
    vocab: 1
)", {}, "data.synthetic.vocab", {3}, {}},
    {"bad routing name", R"(moe:
  routing: random
)", {}, "moe.routing", {2}, {"one of token_choice, expert_choice", "\"random\""}},
    {"bad pipeline schedule", R"(parallel:
  schedule: zigzag
)", {}, "parallel.schedule", {2}, {"one of gpipe, 1f1b"}},

    // ---- constraints between keys: both keys and both lines
    {"top_k > num_experts", R"(moe:
  num_experts: 4
  top_k: 5
)", {}, "moe.top_k", {3, 2}, {"moe.num_experts", "top_k 5 exceeds num_experts 4"}},
    {"d_model not divisible by n_heads", R"(model:
  d_model: 100
  n_heads: 3
  n_kv_heads: 1
)", {}, "model.d_model", {2, 3}, {"model.n_heads", "not divisible by n_heads 3"}},
    {"n_heads not divisible by n_kv_heads", R"(model:
  d_model: 96
  n_heads: 6
  n_kv_heads: 4
)", {}, "model.n_kv_heads", {3, 4}, {"model.n_heads", "n_heads 6 is not divisible by n_kv_heads 4"}},
    {"odd head dimension", R"(model:
  d_model: 12
  n_heads: 4
  n_kv_heads: 2
)", {}, "model.d_model", {2, 3}, {"head dim 3 must be even"}},
    {"seq_len > max_seq_len", R"(model:
  max_seq_len: 64
train:
  seq_len: 128
)", {}, "train.seq_len", {4, 2}, {"model.max_seq_len", "seq_len 128 exceeds max_seq_len 64"}},
    {"micro_batches > batch_size", R"(train:
  batch_size: 4
  micro_batches: 8
)", {}, "train.micro_batches", {3, 2}, {"train.batch_size"}},
    {"first_dense_layers > n_layers", R"(model:
  n_layers: 2
moe:
  first_dense_layers: 3
)", {}, "moe.first_dense_layers", {4, 2}, {"model.n_layers"}},
    {"text source without a path", R"(data:
  source: text
)", {}, "data.source", {2}, {"data.path"}},
    {"synthetic vocab larger than the model's", R"(model:
  vocab_size: 64
data:
  synthetic:
    vocab: 128
)", {}, "data.synthetic.vocab", {5, 2}, {"model.vocab_size", "corpus vocabulary 128 exceeds the model's 64"}},
    {"branching > synthetic vocab", R"(data:
  synthetic:
    vocab: 4
    branching: 5
)", {}, "data.synthetic.branching", {4, 3}, {"branching 5 exceeds the vocabulary 4"}},
    {"partition does not match pp and n_layers", R"(model:
  n_layers: 4
parallel:
  partition: [2, 1]
)", {}, "parallel.partition", {4}, {"parallel.pp", "summing to 3"}},
    {"more pipeline stages than layers", R"(model:
  n_layers: 2
parallel:
  pp: 3
)", {}, "parallel.pp", {4, 2}, {"model.n_layers", "3 pipeline stages for 2 layers"}},
    {"tied embeddings across pipeline stages", R"(model:
  tie_embeddings: true
parallel:
  pp: 2
)", {}, "model.tie_embeddings", {2, 4}, {"parallel.pp", "one stage"}},
    {"compress rank above max_rank", R"(compress:
  rank: 64
  max_rank: 32
)", {}, "compress.rank", {2}, {"1 <= 64 <= 32"}},
    {"compress min_rank above max_rank", R"(compress:
  min_rank: 8
  max_rank: 4
  rank: 4
)", {}, "compress.rank", {2}, {"8 <= 4 <= 4"}},
    {"compress rank 0", R"(compress:
  rank: 0
)", {}, "compress.rank", {2}, {"a positive integer"}},
    {"compress min_ratio 0", R"(compress:
  min_ratio: 0
)", {}, "compress.min_ratio", {2}, {"a number > 0"}},
    {"energy_low >= energy_high", R"(compress:
  energy_low: 0.9
  energy_high: 0.85
)", {}, "compress.energy_low", {2, 3}, {"compress.energy_high"}},

    // ---- time-dilated asynchronous SGD and injected heterogeneity
    {"async window 0 s", R"(async:
  window_seconds: 0
)", {}, "async.window_seconds", {2}, {"a number > 0"}},
    {"async negative window steps", R"(async:
  window_steps: -1
)", {}, "async.window_steps", {2}, {"a non-negative integer"}},
    {"async outer_lr 0", R"(async:
  outer_lr: 0
)", {}, "async.outer_lr", {2}, {"a number > 0"}},
    {"async outer_momentum 1", R"(async:
  outer_momentum: 1
)", {}, "async.outer_momentum", {2}, {"a number in [0, 1)"}},
    {"async with one model replica", R"(parallel:
  dp: 2
  ep: 2
async:
  enabled: true
)", {}, "async.enabled", {5}, {"dp / ep = 2 / 2 = 1", "nothing to be asynchronous across"}},
    {"async with dp 1", R"(async:
  enabled: true
)", {}, "async.enabled", {2}, {"dp / ep = 1 / 1 = 1"}},
    {"slowdown below 1", R"(simulate:
  slowdown: [1.0, 0.5]
)", {}, "simulate.slowdown", {2}, {"a list of numbers >= 1"}},
    {"slowdown count", R"(parallel:
  dp: 2
simulate:
  slowdown: [1.0, 2.0, 3.0]
)", {}, "simulate.slowdown", {4}, {"3 factors", "2 model replicas"}},
    {"async checkpoints with wall-clock windows", R"(parallel:
  dp: 2
async:
  enabled: true
checkpoint:
  every: 10
)", {}, "async.window_steps", {6}, {"need step windows", "checkpoint.every = 10"}},
    {"async checkpoints with 1-step windows", R"(parallel:
  dp: 2
async:
  enabled: true
  window_steps: 1
checkpoint:
  every: 10
)", {}, "async.window_steps", {5, 7}, {"always have a merge in flight"}},
    {"optim name", R"(optim:
  name: adam
)", {}, "optim.name", {2}, {"adamw", "sgd"}},
    {"sgd momentum 1", R"(optim:
  momentum: 1.0
)", {}, "optim.momentum", {2}, {"a number in [0, 1)"}},

    // ---- documents that are not a map of sections, or not YAML
    {"top level is a list", R"(- model
- train
)", {}, "", {1}, {"expected a map of sections at the top level", "got a list"}},
    {"YAML syntax error", R"(model:
  n_heads: 4
  d_model: [128, 256
train:
  steps: 3
)", {}, "", {}, {"YAML syntax error"}},

    // ---- --set overrides on a valid file
    {"--set unknown key", "model:\n  n_layers: 4\n", {"model.n_hedas=4"}, "model.n_hedas", {},
     {"unknown key", "did you mean model.n_heads?"}},
    {"--set wrong type", "model:\n  n_layers: 4\n", {"model.n_heads=four"}, "model.n_heads", {},
     {"expected a positive integer"}},
    {"--set out of range", "model:\n  n_layers: 4\n", {"train.steps=0"}, "train.steps", {}, {}},
    {"--set negative lr", "model:\n  n_layers: 4\n", {"model.n_layers=6", "optim.lr=-1"}, "optim.lr", {},
     {"a number > 0"}},
    {"--set without '='", "model:\n  n_layers: 4\n", {"model.n_layers"}, "model.n_layers", {},
     {"expected key=value"}},
    {"--set without a key", "model:\n  n_layers: 4\n", {"=6"}, "", {}, {"expected key=value"}},
    {"--set value that is not YAML", "model:\n  n_layers: 4\n", {"model.n_layers=[1,"}, "model.n_layers", {},
     {"not valid YAML"}},
    {"--set breaking a constraint with a file value", R"(train:
  steps: 5
moe:
  num_experts: 4
)", {"moe.top_k=9"}, "moe.top_k", {4}, {"moe.num_experts", "top_k 9 exceeds num_experts 4"}},
};

}  // namespace

TEST_CASE("load_config rejects bad files and overrides, naming the key and where it was set") {
    REQUIRE(kBadConfigs.size() >= 18);
    TempDir dir;
    int index = 0;
    for (const auto& c : kBadConfigs) {
        CAPTURE(c.name);
        const std::string path = dir.write("bad_" + std::to_string(index++) + ".yaml", c.yaml);
        const std::string msg = config_error_of([&] { load_config(path, c.overrides); });
        CAPTURE(msg);
        if (!c.key.empty()) CHECK(msg.find(c.key) != std::string::npos);
        for (int line : c.lines) CHECK(has_location(msg, path, line));
        if (!c.overrides.empty()) CHECK(msg.find("--set " + c.overrides.back()) != std::string::npos);
        for (const auto& s : c.also) CHECK(msg.find(s) != std::string::npos);
    }
}

TEST_CASE("a YAML syntax error points at a line of the file") {
    TempDir dir;
    const std::string path = dir.write("syntax.yaml", "model:\n  n_heads: 4\n  d_model: [128, 256\ntrain:\n  steps: 3\n");
    const std::string msg = config_error_of([&] { load_config(path); });
    CAPTURE(msg);
    bool located = false;
    for (int line = 1; line <= 6; ++line) located = located || has_location(msg, path, line);
    CHECK(located);
}

TEST_CASE("parse_config puts the origin string where a file name would be") {
    const std::string msg = config_error_of([] { parse_config("model:\n  n_layers: -2\n", "inline-origin"); });
    CAPTURE(msg);
    CHECK(msg.find("model.n_layers") != std::string::npos);
    CHECK(has_location(msg, "inline-origin", 2));
}

TEST_CASE("load_config names a missing file") {
    TempDir dir;
    const std::string msg = config_error_of([] { load_config("/nonexistent-moe-dir/absent.yaml"); });
    CHECK(msg.find("/nonexistent-moe-dir/absent.yaml") != std::string::npos);
}

TEST_CASE("a repeated key or section is an error naming both places") {
    const std::string sec = config_error_of([] { parse_config("model:\n  n_layers: 2\nmodel:\n  n_layers: 3\n", "dup.yaml"); });
    CHECK(sec.find("model: key appears twice (first at dup.yaml:1) (dup.yaml:3)") != std::string::npos);
    const std::string key = config_error_of([] { parse_config("optim:\n  lr: 0.1\n  lr: 0.2\n", "dup.yaml"); });
    CHECK(key.find("optim.lr: key appears twice (first at dup.yaml:2) (dup.yaml:3)") != std::string::npos);
}

TEST_CASE("configs/tiny.yaml loads, and --set changes one value") {
    const Config cfg = load_config(kTiny);
    CHECK(cfg.source_path == kTiny);
    CHECK(cfg.model.vocab_size == 64);
    CHECK(cfg.data.source == DataFormat::synthetic);
    CHECK(cfg.data.synthetic.vocab == 64);
    CHECK(cfg.overrides.empty());
    REQUIRE(cfg.model.n_layers != 6);

    const Config six = load_config(kTiny, {"model.n_layers=6"});
    CHECK(six.model.n_layers == 6);
    CHECK(six.overrides == std::vector<std::string>{"model.n_layers=6"});
    // Nothing else moved.
    Config expect = cfg;
    expect.model.n_layers = 6;
    expect.overrides = six.overrides;
    CHECK(config_to_yaml(six) == config_to_yaml(expect));

    // Later overrides win over earlier ones and over the file.
    CHECK(load_config(kTiny, {"model.n_layers=6", "model.n_layers=2"}).model.n_layers == 2);
}

TEST_CASE("an empty document is all defaults") {
    const Config c = parse_config("", "empty");
    CHECK(config_to_yaml(c) == config_to_yaml(Config{}));
}

TEST_CASE("config_to_yaml round-trips through parse_config") {
    // tiny.yaml plus overrides touching every kind of field: enum, list, string, real, bool.
    const Config cfg = load_config(kTiny, {"moe.routing=expert_choice", "parallel.partition=[4]",
                                           "parallel.schedule=gpipe", "train.run_id=run 007", "optim.lr=0.0003",
                                           "data.eval_fraction=0.125", "model.tie_embeddings=true",
                                           "checkpoint.dir=/tmp/ck: x", "data.synthetic.seed=99"});
    const std::string y1 = config_to_yaml(cfg);
    CAPTURE(y1);
    CHECK(y1 != config_to_yaml(Config{}));
    CHECK(y1.find("expert_choice") != std::string::npos);

    const Config back = parse_config(y1, "roundtrip");
    CHECK(config_to_yaml(back) == y1);
    CHECK(back.model.moe.routing == Routing::expert_choice);
    CHECK(back.parallel.partition == std::vector<int64_t>{4});
    CHECK(back.parallel.schedule == ScheduleKind::gpipe);
    CHECK(back.train.run_id == "run 007");
    CHECK(back.checkpoint.dir == "/tmp/ck: x");
    CHECK(back.optim.lr == cfg.optim.lr);
    CHECK(back.data.eval_fraction == 0.125);
    CHECK(back.model.tie_embeddings);
    CHECK(back.data.synthetic.seed == 99);
    CHECK(back.model.n_layers == cfg.model.n_layers);
    CHECK(back.train.threads == cfg.train.threads);

    // Defaults round-trip too.
    CHECK(config_to_yaml(parse_config(config_to_yaml(Config{}), "defaults")) == config_to_yaml(Config{}));
}

TEST_CASE("model_config_hash covers the model and moe sections only") {
    const Config base = load_config(kTiny);
    const std::string h = model_config_hash(base);
    CHECK(h.size() == 16);
    CHECK(h == model_config_hash(load_config(kTiny)));  // stable
    CHECK(h != model_config_hash(load_config(kTiny, {"model.d_model=256"})));
    CHECK(h != model_config_hash(load_config(kTiny, {"moe.top_k=1"})));
    CHECK(h == model_config_hash(load_config(kTiny, {"train.steps=7"})));
    CHECK(h == model_config_hash(load_config(kTiny, {"optim.lr=0.01", "data.synthetic.seed=5"})));
}

TEST_CASE("docs/configuration.md lists every key with its default") {
    const std::string doc = read_file(std::string(MOE_SOURCE_DIR) + "/docs/configuration.md");
    const YAML::Node defaults = YAML::Load(config_to_yaml(Config{}));
    for (const auto& f : config_schema()) {
        CAPTURE(f.path);
        // The row: | `key` | default | meaning |
        const size_t at = doc.find("| `" + f.path + "` | ");
        REQUIRE(at != std::string::npos);
        const size_t from = at + f.path.size() + 7, to = doc.find(" |", from);
        const std::string documented = doc.substr(from, to - from);
        YAML::Node node = defaults;
        for (size_t start = 0, dot;; start = dot + 1) {
            dot = f.path.find('.', start);
            node.reset(node[f.path.substr(start, dot - start)]);
            if (dot == std::string::npos) break;
        }
        YAML::Emitter e;
        e << YAML::Flow << node;
        CHECK(documented == std::string(e.c_str()));
    }
}

TEST_CASE("a data.path without data.source is read as what the file is; with synthetic it is an error") {
    TempDir dir("moe_config_data_test");
    const std::string text = dir.write("corpus.txt", "plain text, not a shard\n");
    std::string shard(1024, '\0');
    const int32_t magic = 20240520;
    std::memcpy(shard.data(), &magic, sizeof magic);
    const std::string bin = dir.write("tokens.bin", shard);
    dir.write("shards/a.bin", shard);

    CHECK(load_config(kTiny, {"data.path=" + text}).data.source == DataFormat::text);
    CHECK(load_config(kTiny, {"data.path=" + bin}).data.source == DataFormat::bin);
    CHECK(load_config(kTiny, {"data.path=" + dir.path("shards")}).data.source == DataFormat::bin);
    CHECK(load_config(kTiny, {"data.path=" + dir.path("shards/*.bin")}).data.source == DataFormat::bin);
    // Given explicitly, the source is taken as it is (the reader then checks the file).
    CHECK(load_config(kTiny, {"data.source=text", "data.path=" + bin}).data.source == DataFormat::text);
    // The resolved config says what was read.
    CHECK(config_to_yaml(load_config(kTiny, {"data.path=" + text})).find("source: text") != std::string::npos);

    const std::string msg = config_error_of([&] { load_config(kTiny, {"data.source=synthetic", "data.path=" + text}); });
    CHECK(msg.find("data.source") != std::string::npos);
    CHECK(msg.find("data.path") != std::string::npos);
    CHECK(msg.find(text) != std::string::npos);
    const std::string file = dir.write("synthetic.yaml", "data:\n  source: synthetic\n  path: " + text + "\n");
    const std::string in_file = config_error_of([&] { load_config(file); });
    CHECK(in_file.find("synthetic.yaml:2") != std::string::npos);
}

TEST_CASE("an empty config file, a comments-only one, a folder or a device is refused by name") {
    TempDir dir("moe_config_empty_test");
    for (const char* body : {"", "# only a comment\n\n# and another\n", "---\n"}) {
        const std::string path = dir.write("empty.yaml", body);
        const std::string msg = config_error_of([&] { load_config(path); });
        CAPTURE(body);
        CHECK(msg.find(path) != std::string::npos);
        CHECK(msg.find("is empty") != std::string::npos);
    }
    const std::string folder = config_error_of([&] { load_config(dir.path()); });
    CHECK(folder.find("is a directory") != std::string::npos);
    CHECK(folder.find(dir.path()) != std::string::npos);
    CHECK(config_error_of([&] { load_config("/dev/null"); }).find("not a regular file") != std::string::npos);
    const std::string big = dir.write("big.yaml", "# " + std::string(2 << 20, 'x') + "\n");
    CHECK(config_error_of([&] { load_config(big); }).find("more than a config file may hold") != std::string::npos);
}

TEST_CASE("--set of a whole section checks each of its keys by name") {
    const Config c = load_config(kTiny, {"model={n_layers: 2, d_model: 64}"});
    CHECK(c.model.n_layers == 2);
    CHECK(c.model.d_model == 64);
    const std::string msg = config_error_of([] { load_config(kTiny, {"model={n_layers: 2, evil: 1}"}); });
    CHECK(msg.find("model.evil: unknown key") != std::string::npos);
    CHECK(msg.find("--set model={n_layers: 2, evil: 1}") != std::string::npos);
    CHECK(config_error_of([] { load_config(kTiny, {"model=3"}); }).find("model: is a section") != std::string::npos);
    CHECK(config_error_of([] { load_config(kTiny, {"model={n_layers: -1}"}); }).find("model.n_layers: expected") !=
          std::string::npos);
}
