// Data sources (lib/data/data_source.cpp, data_synthetic.cpp): a table of bad data files, each
// of which must be refused with a message naming the file and the config key that pointed at it;
// and the properties training relies on: seeded determinism, the replica split (dp=2 with batch b
// reads what one rank with batch 2b reads), a checkpointable position, one visit per window per
// epoch of a file source, and an exact entropy bound checked against a brute-force posterior.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "temp_dir.h"
#include "data/data_source.h"
#include "data/data_synthetic.h"

using namespace moe;
using moe::test::TempDir;
namespace fs = std::filesystem;

namespace {

// An llm.c token shard: 256 int32 header (magic, version, count) then uint16 tokens.
std::string bin_shard(const std::vector<uint16_t>& tokens, int32_t magic = 20240520, int32_t version = 1,
                      int64_t header_count = -1) {
    int32_t header[256] = {};
    header[0] = magic;
    header[1] = version;
    header[2] = int32_t(header_count >= 0 ? header_count : int64_t(tokens.size()));
    std::string s(reinterpret_cast<const char*>(header), sizeof header);
    s.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
    return s;
}

std::vector<uint16_t> ramp(size_t n, uint16_t mod = 50) {
    std::vector<uint16_t> t(n);
    for (size_t i = 0; i < n; ++i) t[i] = uint16_t(i % mod);
    return t;
}

DataConfig file_config(DataFormat format, std::string path, std::string eval_path = "") {
    DataConfig c;
    c.source = format;
    c.path = std::move(path);
    c.eval_path = std::move(eval_path);
    c.eval_fraction = 0.1;
    return c;
}

struct BadData {
    const char* name;
    // Builds the files in `dir`, returns the config; `file` receives the path the message must name.
    std::function<DataConfig(const TempDir& dir, std::string& file)> setup;
    const char* key;        // config key the message must name
    const char* fragment;   // what is wrong, in the message's words
};

constexpr int64_t kSeqLen = 16;

std::vector<BadData> bad_data_table() {
    using F = DataFormat;
    return {
        {"text: missing file", [](const TempDir& d, std::string& f) { return file_config(F::text, f = d.path("nope.txt")); },
         "data.path", "no such file"},
        {"text: empty file", [](const TempDir& d, std::string& f) { return file_config(F::text, f = d.write("e.txt", "")); },
         "data.path", "file is empty"},
        {"text: a directory", [](const TempDir& d, std::string& f) {
             d.write("dir/x", "x");
             return file_config(F::text, f = d.path("dir"));
         }, "data.path", "is a directory"},
        {"text: shorter than one sequence", [](const TempDir& d, std::string& f) {
             return file_config(F::text, f = d.write("short.txt", "hello"), d.write("v.txt", std::string(100, 'v')));
         }, "data.path", "5 training tokens, fewer than one sequence"},
        {"text: held-out part too short", [](const TempDir& d, std::string& f) {
             return file_config(F::text, f = d.write("mid.txt", std::string(100, 'a')));
         }, "data.path", "held-out"},
        {"text: missing eval file", [](const TempDir& d, std::string& f) {
             return file_config(F::text, d.write("t.txt", std::string(500, 'a')), f = d.path("val.txt"));
         }, "data.eval_path", "no such file"},
        {"text: eval file shorter than one sequence", [](const TempDir& d, std::string& f) {
             return file_config(F::text, d.write("t.txt", std::string(500, 'a')), f = d.write("v.txt", "abc"));
         }, "data.eval_path", "fewer than one sequence"},
        {"bin: missing file", [](const TempDir& d, std::string& f) { return file_config(F::bin, f = d.path("n.bin")); },
         "data.path", "no such file"},
        {"bin: empty file", [](const TempDir& d, std::string& f) { return file_config(F::bin, f = d.write("e.bin", "")); },
         "data.path", "file is empty"},
        {"bin: truncated header", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, f = d.write("h.bin", std::string(100, '\1')));
         }, "data.path", "truncated header"},
        {"bin: wrong magic", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, f = d.write("m.bin", bin_shard(ramp(500), 12345)));
         }, "data.path", "bad magic 12345"},
        {"bin: unsupported version", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, f = d.write("v.bin", bin_shard(ramp(500), 20240520, 7)));
         }, "data.path", "unsupported shard version 7"},
        {"bin: header says zero tokens", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, f = d.write("z.bin", bin_shard({}, 20240520, 1, 0)));
         }, "data.path", "header says 0 tokens"},
        {"bin: truncated token payload", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, f = d.write("t.bin", bin_shard(ramp(500), 20240520, 1, 600)));
         }, "data.path", "(truncated)"},
        {"bin: trailing bytes after the tokens", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, f = d.write("x.bin", bin_shard(ramp(500)) + "xyz"));
         }, "data.path", "but the file has"},
        {"bin: directory without shards", [](const TempDir& d, std::string& f) {
             d.write("shards/readme.txt", "no shards here");
             return file_config(F::bin, f = d.path("shards"));
         }, "data.path", "holds no .bin token shards"},
        {"bin: glob matching nothing", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, f = d.path("train_*.bin"));
         }, "data.path", "pattern matches no files"},
        {"bin: one bad shard among good ones", [](const TempDir& d, std::string& f) {
             d.write("mix/a.bin", bin_shard(ramp(500)));
             f = d.write("mix/b.bin", bin_shard(ramp(500), 99));
             return file_config(F::bin, d.path("mix"));
         }, "data.path", "bad magic 99"},
        {"bin: eval shard with wrong magic", [](const TempDir& d, std::string& f) {
             return file_config(F::bin, d.write("tr.bin", bin_shard(ramp(500))),
                                f = d.write("va.bin", bin_shard(ramp(500), 1)));
         }, "data.eval_path", "bad magic 1"},
    };
}

std::vector<int32_t> rows(const TokenBatch& b, int64_t first, int64_t count) {
    return {b.inputs.begin() + first * b.seq_len, b.inputs.begin() + (first + count) * b.seq_len};
}

}  // namespace

TEST_CASE("bad data files are refused, naming the file and the config key") {
    const auto table = bad_data_table();
    REQUIRE(table.size() >= 15);
    for (const auto& c : table) {
        CAPTURE(c.name);
        TempDir dir;
        std::string file;
        DataConfig cfg = c.setup(dir, file);
        std::string msg;
        try {
            make_data_source(cfg, kSeqLen, 1, 0, 1);
            FAIL_CHECK("accepted");
        } catch (const DataError& e) {
            msg = e.what();
        }
        CAPTURE(msg);
        CHECK(msg.find(file) != std::string::npos);
        CHECK(msg.find(c.key) != std::string::npos);
        CHECK(msg.find(c.fragment) != std::string::npos);
    }
}

TEST_CASE("a text or bin source without a path is a config error") {
    for (auto f : {DataFormat::text, DataFormat::bin}) {
        DataConfig cfg;
        cfg.source = f;
        CHECK_THROWS_WITH_AS(make_data_source(cfg, kSeqLen, 1, 0, 1), doctest::Contains("data.path"), ConfigError);
    }
}

TEST_CASE("sampling is deterministic in the seed") {
    TempDir dir;
    const DataConfig text = file_config(DataFormat::text, dir.write("t.txt", std::string(4000, 'q') + "abcdefgh"));
    for (const DataConfig& cfg : {DataConfig{}, text}) {
        auto a = make_data_source(cfg, kSeqLen, 7, 0, 1), b = make_data_source(cfg, kSeqLen, 7, 0, 1),
             c = make_data_source(cfg, kSeqLen, 8, 0, 1);
        bool differs = false;
        for (int i = 0; i < 5; ++i) {
            auto ba = a->next_train_batch(4), bb = b->next_train_batch(4), bc = c->next_train_batch(4);
            CHECK(ba.inputs == bb.inputs);
            CHECK(ba.targets == bb.targets);
            differs |= ba.inputs != bc.inputs;
        }
        if (cfg.source == DataFormat::synthetic) CHECK(differs);  // the text file is mostly one letter
        CHECK(a->eval_batch(3, 4).inputs == c->eval_batch(3, 4).inputs);  // eval ignores the training seed
    }
}

TEST_CASE("targets are inputs shifted by one") {
    auto src = make_data_source(DataConfig{}, kSeqLen, 1, 0, 1);
    TokenBatch b = src->next_train_batch(2);
    for (int64_t r = 0; r < 2; ++r)
        for (int64_t t = 0; t + 1 < kSeqLen; ++t) CHECK(b.targets[size_t(r * kSeqLen + t)] == b.inputs[size_t(r * kSeqLen + t + 1)]);
}

TEST_CASE("two replicas with batch b read what one replica with batch 2b reads") {
    TempDir dir;
    const DataConfig bin = file_config(DataFormat::bin, dir.write("d.bin", bin_shard(ramp(3000, 97))));
    for (const DataConfig& cfg : {DataConfig{}, bin}) {
        auto one = make_data_source(cfg, kSeqLen, 3, 0, 1);
        auto r0 = make_data_source(cfg, kSeqLen, 3, 0, 2), r1 = make_data_source(cfg, kSeqLen, 3, 1, 2);
        for (int step = 0; step < 4; ++step) {
            TokenBatch full = one->next_train_batch(6);
            CHECK(r0->next_train_batch(3).inputs == rows(full, 0, 3));
            CHECK(r1->next_train_batch(3).inputs == rows(full, 3, 3));
        }
        CHECK(r0->position().next_sample == one->position().next_sample);
        CHECK(r1->position().next_sample == one->position().next_sample);
    }
}

TEST_CASE("set_position continues the stream exactly") {
    auto a = make_data_source(DataConfig{}, kSeqLen, 5, 0, 1);
    a->next_train_batch(4);
    const DataPosition mid = a->position();
    const TokenBatch expected = a->next_train_batch(4);
    auto b = make_data_source(DataConfig{}, kSeqLen, 5, 0, 1);
    b->set_position(mid);
    CHECK(b->next_train_batch(4).inputs == expected.inputs);
}

TEST_CASE("a file source visits every window once per epoch, in a new order each epoch") {
    TempDir dir;
    // Window w starts with token w * kSeqLen (mod 60000), so the first token identifies the window.
    std::vector<uint16_t> tokens(20 * kSeqLen + 1);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint16_t(i);
    const std::string eval = dir.write("eval.bin", bin_shard(ramp(200)));
    auto src = make_data_source(file_config(DataFormat::bin, dir.write("train.bin", bin_shard(tokens)), eval), kSeqLen, 9, 0, 1);
    std::vector<int32_t> order[2];
    for (int e = 0; e < 2; ++e) {
        CHECK(src->epoch() == uint64_t(e));
        for (int i = 0; i < 5; ++i) {
            TokenBatch b = src->next_train_batch(4);
            for (int64_t r = 0; r < 4; ++r) order[e].push_back(b.inputs[size_t(r * kSeqLen)] / int32_t(kSeqLen));
        }
    }
    CHECK(src->epoch() == 2);
    for (auto& o : order) CHECK(std::set<int32_t>(o.begin(), o.end()).size() == 20);
    CHECK(order[0] != order[1]);
}

TEST_CASE("text tokens are bytes; bin vocabulary is the largest token + 1") {
    TempDir dir;
    auto text = make_data_source(file_config(DataFormat::text, dir.write("t.txt", std::string(400, 'z'))), kSeqLen, 1, 0, 1);
    CHECK(text->vocab_size() == 256);
    CHECK(text->tokens_are_bytes());
    CHECK(text->next_train_batch(1).inputs[0] == 'z');
    auto bin = make_data_source(file_config(DataFormat::bin, dir.write("b.bin", bin_shard(ramp(500, 77)))), kSeqLen, 1, 0, 1);
    CHECK(bin->vocab_size() == 77);
    CHECK_FALSE(bin->tokens_are_bytes());
    CHECK_FALSE(bin->entropy_bound(2, 2).has_value());
}

// Brute force: posterior over sources after each prefix, Bayes predictive probability of the next token.
double brute_force_bayes_loss(const MarkovMixture& m, const std::vector<int32_t>& doc) {
    const int64_t K = m.num_sources();
    std::vector<double> post(size_t(K), 1.0 / double(K));
    double loss = 0;
    for (size_t t = 1; t < doc.size(); ++t) {
        double p = 0;
        for (int64_t k = 0; k < K; ++k) p += post[size_t(k)] * m.prob(k, doc[t - 1], doc[t]);
        loss -= std::log(p);
        double z = 0;
        for (int64_t k = 0; k < K; ++k) z += post[size_t(k)] *= m.prob(k, doc[t - 1], doc[t]);
        for (auto& q : post) q /= z;
    }
    return loss;
}

TEST_CASE("the synthetic corpus's Bayes loss matches a brute-force posterior") {
    SyntheticDataConfig cfg;
    cfg.vocab = 12;
    cfg.num_sources = 3;
    cfg.branching = 3;
    MarkovMixture m(cfg);
    for (int64_t k = 0; k < 3; ++k)
        for (int64_t a = 0; a < 12; ++a) {
            double row = 0;
            int nonzero = 0;
            for (int64_t b = 0; b < 12; ++b) row += m.prob(k, a, b), nonzero += m.prob(k, a, b) > 0;
            CHECK(row == doctest::Approx(1.0));
            CHECK(nonzero <= 3);
        }
    std::vector<int32_t> doc(40);
    for (uint64_t seed = 1; seed <= 5; ++seed) {
        m.generate(seed, doc.data(), int64_t(doc.size()));
        for (size_t t = 1; t < doc.size(); ++t) CHECK(m.prob(0, doc[t - 1], doc[t]) + m.prob(1, doc[t - 1], doc[t]) + m.prob(2, doc[t - 1], doc[t]) > 0);
        CHECK(m.bayes_loss(doc.data(), int64_t(doc.size())) == doctest::Approx(brute_force_bayes_loss(m, doc)).epsilon(1e-9));
    }
}

TEST_CASE("the entropy bound is below a uniform guess and zero for a deterministic corpus") {
    DataConfig cfg;
    auto src = make_data_source(cfg, kSeqLen, 1, 0, 1);
    const double bound = *src->entropy_bound(2, 4);
    CHECK(bound > 0);
    CHECK(bound < std::log(double(cfg.synthetic.vocab)));

    // One source with one successor per state: everything after the first token is certain.
    cfg.synthetic.num_sources = 1;
    cfg.synthetic.branching = 1;
    CHECK(*make_data_source(cfg, kSeqLen, 1, 0, 1)->entropy_bound(2, 4) == doctest::Approx(0.0));
}
