// moe-eval: evaluate, verify, inspect and export moe-train checkpoints; compare runs.
//
//   moe-eval eval --run runs/<id>              eval loss, perplexity, bits/byte, expert load
//   moe-eval eval --checkpoint DIR             DIR: a step-N directory or a checkpoint root (per-host
//                                              storage: one per host, comma-separated)
//   moe-eval verify DIR                        exit code says what failed (see below)
//   moe-eval logits --checkpoint DIR --tokens FILE [--out FILE]
//   moe-eval export --checkpoint DIR --out DIR safetensors + config.json (HF Mixtral)
//   moe-eval report RUN_DIR... -o report.md
//   moe-eval diff A B [--tolerance 1e-5]      largest ||a-b||/||a|| over the parameters
//
// Exit codes: 0 ok, 1 error, 2 usage; verify: 10 no manifest, 11 bad manifest, 12 missing
// shard, 13 size mismatch, 14 checksum mismatch, 15 a tensor's name, dtype or shape does not match
// the model the manifest's config builds (or a value or counter is out of range). verify of a
// checkpoint root checks the checkpoint a resume would take.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "checkpoint/checkpoint_model.h"
#include "train/compute_threads.h"
#include "data/data_source.h"
#include "train/evaluate.h"
#include "common/file_io.h"
#include "checkpoint/hf_export.h"
#include "report/run_report.h"

namespace {

constexpr int kShapeMismatch = 15;

// --run RUN_DIR: the checkpoint directory its record names.
std::string checkpoint_of_run(const std::string& run_dir) {
    const std::string record = run_dir + "/record.yaml";
    YAML::Node r;
    try {
        r = YAML::LoadFile(record);
    } catch (const YAML::Exception& e) {
        throw moe::Error(fmt::format("{}: cannot read the run record: {}", record, e.what()));
    }
    const std::string dir = r["checkpoint_dir"].as<std::string>(run_dir + "/checkpoints");
    if (!std::filesystem::exists(dir))
        throw moe::Error(fmt::format("{}: the run saved no checkpoint (expected {}); run it with checkpoint.save_final: "
                                     "true", run_dir, dir));
    return dir;
}

int run_eval(const std::string& checkpoint, const std::string& run, int64_t batches) {
    moe::LoadedCheckpoint ck = moe::load_model_checkpoint(checkpoint.empty() ? checkpoint_of_run(run) : checkpoint);
    const moe::Config& cfg = ck.config;
    moe::set_compute_threads(cfg.train.threads > 0 ? cfg.train.threads : int64_t(std::max(1u, std::thread::hardware_concurrency())));
    auto data = moe::make_data_source(cfg.data, cfg.train.seq_len, cfg.train.seed, 0, 1);
    const int64_t n = batches > 0 ? batches : cfg.train.eval_batches;
    moe::EvalResult r = moe::evaluate(*ck.model, *data, n, cfg.train.batch_size);
    fmt::print("checkpoint    {} (step {}, {} tokens trained)\n", ck.dir, ck.state.step, ck.state.tokens);
    fmt::print("data          {}\n", data->describe());
    fmt::print("eval tokens   {}\n", r.tokens);
    fmt::print("eval loss     {:.4f} nats/token\n", r.loss);
    fmt::print("perplexity    {:.3f}\n", r.perplexity);
    if (r.bits_per_byte) fmt::print("bits per byte {:.4f}\n", *r.bits_per_byte);
    if (auto bound = data->entropy_bound(n, cfg.train.batch_size))
        fmt::print("entropy bound {:.4f} nats/token (ratio {:.3f})\n", *bound, r.loss / *bound);
    fmt::print("expert load (share of routed tokens per expert):\n{}", moe::format_expert_load(r.expert_load));
    return 0;
}

// The step folder's manifest, checksums, and every tensor and counter against the model its
// config builds; returns 0 or the exit code of what failed.
int verify_step(const std::string& step_dir, bool quiet_ok = false) {
    moe::VerifyResult v = moe::verify_checkpoint(step_dir);
    if (!v.ok()) {
        fmt::print(stderr, "moe-eval verify: FAILED: {}\n", v.message);
        return static_cast<int>(v.status);
    }
    try {
        moe::LoadedCheckpoint ck = moe::load_model_checkpoint(step_dir);
        if (!quiet_ok)
            fmt::print("{}: ok (step {}, {} parameters; manifest, checksums, every tensor and counter verified)\n",
                       step_dir, ck.state.step, ck.model->params().total_numel());
    } catch (const std::exception& e) {
        fmt::print(stderr, "moe-eval verify: FAILED: {}\n", e.what());
        return kShapeMismatch;
    }
    return 0;
}

// DIR is a step folder (checked strictly), or a checkpoint root: then the checkpoint a resume
// would take is checked (the newest that verifies; LATEST is only a hint), and newer ones that
// fail are reported. Exit 0 when a resume would find a good checkpoint.
int run_verify(const std::string& dir) {
    namespace fs = std::filesystem;
    if (fs::exists(dir + "/manifest.yaml") || !fs::is_directory(dir)) return verify_step(dir);
    moe::CheckpointStore store(dir, 2, {});
    const std::vector<std::string> steps = store.list_steps();
    if (steps.empty()) {
        fmt::print(stderr, "moe-eval verify: FAILED: {}: no complete checkpoint (no step-*/manifest.yaml)\n", dir);
        return static_cast<int>(moe::VerifyStatus::no_manifest);
    }
    std::vector<std::string> notes;
    const std::vector<std::string> valid = store.candidates(&notes);
    for (const auto& n : notes) fmt::print(stderr, "moe-eval verify: note: {}\n", n);
    for (const auto& step_dir : valid) {
        if (verify_step(step_dir) == 0) {
            if (step_dir != steps.front())
                fmt::print("{}: newer checkpoints fail (see above); a resume takes {}\n", dir, step_dir);
            return 0;
        }
    }
    return verify_step(steps.front(), true);   // none is good: say what is wrong with the newest
}

std::vector<int64_t> read_tokens(const std::string& path, int64_t vocab) {
    std::ifstream in(path);
    if (!in) throw moe::Error(fmt::format("{}: cannot open token file", path));
    std::vector<int64_t> tokens;
    std::string word;
    while (in >> word) {
        size_t used = 0;
        int64_t t = -1;
        try {
            t = std::stoll(word, &used);
        } catch (const std::exception&) {
        }
        if (used != word.size() || t < 0 || t >= vocab)
            throw moe::Error(fmt::format("{}: token {} '{}' is not an integer in [0, {})", path, tokens.size(), word, vocab));
        tokens.push_back(t);
    }
    if (tokens.empty()) throw moe::Error(fmt::format("{}: no tokens (expected whitespace-separated integers)", path));
    return tokens;
}

int run_logits(const std::string& checkpoint, const std::string& tokens_path, const std::string& out_path) {
    moe::LoadedCheckpoint ck = moe::load_model_checkpoint(checkpoint);
    const auto tokens = read_tokens(tokens_path, ck.config.model.vocab_size);
    if (int64_t(tokens.size()) > ck.config.model.max_seq_len)
        throw moe::Error(fmt::format("{}: {} tokens, more than model.max_seq_len {}", tokens_path, tokens.size(),
                                     ck.config.model.max_seq_len));
    torch::NoGradGuard no_grad;
    auto input = torch::tensor(tokens, torch::kInt64).unsqueeze(0);
    auto logits = ck.model->forward(input).squeeze(0).contiguous();   // [T, V]
    std::string text = fmt::format("# moe-eval logits: checkpoint {} (step {}); one row per position: position token "
                                   "then {} logits\n", ck.dir, ck.state.step, logits.size(1));
    const float* p = logits.data_ptr<float>();
    for (int64_t t = 0; t < logits.size(0); ++t) {
        text += fmt::format("{} {}", t, tokens[size_t(t)]);
        for (int64_t v = 0; v < logits.size(1); ++v) text += fmt::format(" {:.9g}", p[t * logits.size(1) + v]);
        text += "\n";
    }
    if (out_path.empty()) {
        fmt::print("{}", text);
    } else {
        moe::write_file_atomically(out_path, text);
    }
    return 0;
}

int run_export(const std::string& checkpoint, const std::string& out_dir) {
    moe::LoadedCheckpoint ck = moe::load_model_checkpoint(checkpoint);
    moe::export_hf_mixtral(ck.config.model, ck.model->params(), out_dir);
    fmt::print("exported {} (step {}) to {}/model.safetensors and {}/config.json\n", ck.dir, ck.state.step, out_dir, out_dir);
    return 0;
}

// Per tensor the relative difference ||a - b|| / ||a|| (Frobenius); exit 1 when the largest
// exceeds the tolerance. Also reports the largest absolute elementwise difference.
int run_diff(const std::string& a_path, const std::string& b_path, double tolerance) {
    moe::LoadedCheckpoint a = moe::load_model_checkpoint(a_path), b = moe::load_model_checkpoint(b_path);
    auto slots_a = moe::tensor_slots(a.model->params()), slots_b = moe::tensor_slots(b.model->params());
    if (slots_a.size() != slots_b.size())
        throw moe::Error(fmt::format("{} has {} tensors, {} has {}", a.dir, slots_a.size(), b.dir, slots_b.size()));
    double worst = 0, max_abs = 0;
    std::string worst_name;
    bool identical = true;
    for (size_t i = 0; i < slots_a.size(); ++i) {
        auto ta = moe::slot_tensor(slots_a[i], slots_a[i].entry->value);
        auto tb = moe::slot_tensor(slots_b[i], slots_b[i].entry->value);
        if (slots_a[i].name != slots_b[i].name || ta.sizes() != tb.sizes())
            throw moe::Error(fmt::format("tensor {} of {} is '{}', of {} '{}' (or the shapes differ)", i, a.dir,
                                         slots_a[i].name, b.dir, slots_b[i].name));
        identical = identical && torch::equal(ta, tb);
        const double rel = (ta - tb).norm().item<double>() / std::max(ta.norm().item<double>(), 1e-30);
        max_abs = std::max(max_abs, (ta - tb).abs().max().item<double>());
        if (rel > worst || worst_name.empty()) worst = rel, worst_name = slots_a[i].name;
    }
    fmt::print("{} vs {}: {} tensors, {}; largest relative difference ||a-b||/||a|| {:.3g} in {} (tolerance {:.3g}); "
               "largest elementwise |a-b| {:.3g}\n", a.dir, b.dir, slots_a.size(),
               identical ? "bitwise identical" : "not identical", worst, worst_name, tolerance, max_abs);
    return worst <= tolerance ? 0 : 1;
}

int run_report(const std::vector<std::string>& runs, const std::string& out) {
    const std::string md = moe::run_report_markdown(runs);
    if (out.empty() || out == "-") {
        fmt::print("{}", md);
    } else {
        moe::write_file_atomically(out, md);
        fmt::print("report of {} run(s) written to {}\n", runs.size(), out);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"moe-eval: evaluate, verify, export and compare moe-train checkpoints and runs"};
    app.require_subcommand(1);

    std::string checkpoint, run, tokens, out, verify_dir;
    std::vector<std::string> runs;
    int64_t batches = 0;

    auto* eval = app.add_subcommand("eval", "eval loss, perplexity, bits per byte and expert load of a checkpoint");
    auto* eval_ck = eval->add_option("--checkpoint", checkpoint, "step directory or checkpoint root");
    eval->add_option("--run", run, "run directory (uses its newest valid checkpoint)")->excludes(eval_ck);
    eval->add_option("--batches", batches, "eval batches (default: train.eval_batches of the run)");

    auto* verify = app.add_subcommand("verify", "check manifest, checksums and tensor shapes of a checkpoint");
    verify->add_option("dir", verify_dir, "step directory, or a checkpoint root (checks LATEST)")->required();

    auto* logits = app.add_subcommand("logits", "per-position logits of a token sequence, for cross-checks");
    logits->add_option("--checkpoint", checkpoint, "step directory or checkpoint root")->required();
    logits->add_option("--tokens", tokens, "file of whitespace-separated token ids")->required();
    logits->add_option("--out", out, "write here instead of stdout");

    auto* exp = app.add_subcommand("export", "write safetensors + config.json in Hugging Face Mixtral layout");
    exp->add_option("--checkpoint", checkpoint, "step directory or checkpoint root")->required();
    exp->add_option("--out", out, "output directory")->required();

    auto* report = app.add_subcommand("report", "Markdown report comparing runs (loss curves, expert load)");
    report->add_option("runs", runs, "run directories")->required();
    report->add_option("-o,--out", out, "output file (default: stdout)");

    std::string diff_a, diff_b;
    double tolerance = 1e-5;
    auto* diff = app.add_subcommand("diff", "compare the parameters of two checkpoints");
    diff->add_option("a", diff_a, "checkpoint (step directory or root)")->required();
    diff->add_option("b", diff_b, "checkpoint (step directory or root)")->required();
    diff->add_option("--tolerance", tolerance, "largest relative difference allowed (exit 1 above it)");

    CLI11_PARSE(app, argc, argv);
    try {
        if (eval->parsed()) {
            if (checkpoint.empty() && run.empty()) {
                fmt::print(stderr, "moe-eval eval: give --checkpoint DIR or --run RUN_DIR\n");
                return 2;
            }
            return run_eval(checkpoint, run, batches);
        }
        if (verify->parsed()) return run_verify(verify_dir);
        if (logits->parsed()) return run_logits(checkpoint, tokens, out);
        if (exp->parsed()) return run_export(checkpoint, out);
        if (report->parsed()) return run_report(runs, out);
        if (diff->parsed()) return run_diff(diff_a, diff_b, tolerance);
    } catch (const moe::ConfigError& e) {
        fmt::print(stderr, "moe-eval: {}\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "moe-eval: error: {}\n", e.what());
        return 1;
    }
    return 2;
}
