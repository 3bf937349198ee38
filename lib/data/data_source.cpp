// The three data sources behind the DataSource interface, and the factory.
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "data/data_source.h"
#include "data/data_synthetic.h"
#include "data/rng.h"

namespace moe {

namespace {

constexpr uint64_t kTrainStream = 1, kEvalStream = 2;

// Samples addressed by global index; the split between replicas is pure arithmetic (data.h).
class IndexedSource : public DataSource {
   public:
    IndexedSource(int64_t seq_len, int64_t replica, int64_t replicas)
        : seq_len_(seq_len), replica_(replica), replicas_(replicas) {}

    TokenBatch next_train_batch(int64_t batch) override {
        TokenBatch b = empty_batch(batch);
        const uint64_t first = pos_.next_sample + uint64_t(replica_ * batch);
        std::vector<int32_t> doc(size_t(seq_len_ + 1));
        for (int64_t i = 0; i < batch; ++i) {
            train_sample(first + uint64_t(i), doc.data());
            split(doc, b, i);
        }
        pos_.next_sample += uint64_t(batch * replicas_);
        return b;
    }

    TokenBatch eval_batch(int64_t index, int64_t batch) override {
        TokenBatch b = empty_batch(batch);
        std::vector<int32_t> doc(size_t(seq_len_ + 1));
        for (int64_t i = 0; i < batch; ++i) {
            eval_sample(uint64_t(index * batch + i), doc.data());
            split(doc, b, i);
        }
        return b;
    }

    DataPosition position() const override { return pos_; }
    void set_position(const DataPosition& pos) override { pos_ = pos; }

   protected:
    virtual void train_sample(uint64_t index, int32_t* doc) const = 0;  // seq_len + 1 tokens
    virtual void eval_sample(uint64_t index, int32_t* doc) const = 0;

    TokenBatch empty_batch(int64_t batch) const {
        TokenBatch b;
        b.batch = batch;
        b.seq_len = seq_len_;
        b.inputs.resize(size_t(batch * seq_len_));
        b.targets.resize(size_t(batch * seq_len_));
        return b;
    }
    void split(const std::vector<int32_t>& doc, TokenBatch& b, int64_t row) const {
        std::copy(doc.begin(), doc.end() - 1, b.inputs.begin() + row * seq_len_);
        std::copy(doc.begin() + 1, doc.end(), b.targets.begin() + row * seq_len_);
    }

    int64_t seq_len_, replica_, replicas_;
    DataPosition pos_;
};

class SyntheticSource final : public IndexedSource {
   public:
    SyntheticSource(const SyntheticDataConfig& cfg, int64_t seq_len, uint64_t seed, int64_t replica, int64_t replicas)
        : IndexedSource(seq_len, replica, replicas), cfg_(cfg), mix_(cfg), seed_(seed) {}

    int64_t vocab_size() const override { return cfg_.vocab; }
    bool tokens_are_bytes() const override { return false; }
    uint64_t epoch() const override { return 0; }
    std::string describe() const override {
        return fmt::format("synthetic Markov mixture: {} sources over {} tokens, branching {}, seed {} "
                           "(asymptotic entropy rate {:.4f} nats/token)",
                           cfg_.num_sources, cfg_.vocab, cfg_.branching, cfg_.seed,
                           mix_.asymptotic_entropy_rate());
    }

    std::optional<double> entropy_bound(int64_t num_batches, int64_t batch) const override {
        std::vector<int32_t> doc(size_t(seq_len_ + 1));
        double loss = 0;
        const int64_t samples = num_batches * batch;
        for (int64_t i = 0; i < samples; ++i) {
            eval_sample(uint64_t(i), doc.data());
            loss += mix_.bayes_loss(doc.data(), seq_len_ + 1);
        }
        return loss / double(samples * seq_len_);
    }

   protected:
    void train_sample(uint64_t index, int32_t* doc) const override {
        mix_.generate(mix_keys(seed_, kTrainStream, index), doc, seq_len_ + 1);
    }
    void eval_sample(uint64_t index, int32_t* doc) const override {
        // Eval documents depend only on the corpus seed, so every run is scored on the same ones.
        mix_.generate(mix_keys(cfg_.seed, kEvalStream, index), doc, seq_len_ + 1);
    }

   private:
    SyntheticDataConfig cfg_;
    MarkovMixture mix_;
    uint64_t seed_;
};

// ---- files ---------------------------------------------------------------------------------

// A data file opened for reading after its checks: it exists, is a regular file (a device such
// as /dev/zero would be read until memory runs out), is not empty, and its tokens fit in memory.
class DataFile {
   public:
    // `bytes_per_token`: 1 for text, 2 for .bin shards (the in-memory tokens take 4 bytes each).
    DataFile(const std::string& path, int64_t bytes_per_token) : path_(path) {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            if (errno == ENOENT) throw DataError(fmt::format("{}: no such file", path));
            throw DataError(fmt::format("{}: cannot stat: {}", path, std::strerror(errno)));
        }
        if (S_ISDIR(st.st_mode)) throw DataError(fmt::format("{}: is a directory, expected a file", path));
        if (!S_ISREG(st.st_mode))
            throw DataError(fmt::format("{}: is not a regular file (a device, pipe or socket); give a file", path));
        size_ = uint64_t(st.st_size);
        if (size_ == 0) throw DataError(fmt::format("{}: file is empty", path));
        const uint64_t memory = uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE));
        const uint64_t needed = size_ / uint64_t(bytes_per_token) * sizeof(int32_t);
        if (needed > memory / 2)
            throw DataError(fmt::format("{}: {} bytes would take {} bytes of memory as tokens, more than half of this "
                                        "machine's {}; split it into shards",
                                        path, size_, needed, memory));
        in_.open(path, std::ios::binary);
        if (!in_) throw DataError(fmt::format("{}: cannot open for reading: {}", path, std::strerror(errno)));
    }
    uint64_t size() const { return size_; }
    // Reads exactly `n` bytes (the file was checked to hold them).
    void read(void* out, size_t n) {
        in_.read(static_cast<char*>(out), std::streamsize(n));
        if (size_t(in_.gcount()) != n) throw DataError(fmt::format("{}: read error (file changed while read?)", path_));
    }

   private:
    std::string path_;
    uint64_t size_ = 0;
    std::ifstream in_;
};

// Tokens are appended in bounded pieces, never as a second whole copy of the file.
constexpr size_t kReadChunk = size_t(1) << 20;

void append_text_file(const std::string& path, std::vector<int32_t>& tokens) {
    DataFile f(path, 1);
    std::vector<unsigned char> chunk(kReadChunk);
    tokens.reserve(tokens.size() + size_t(f.size()));
    for (uint64_t left = f.size(); left > 0;) {
        const size_t n = size_t(std::min<uint64_t>(left, chunk.size()));
        f.read(chunk.data(), n);
        for (size_t i = 0; i < n; ++i) tokens.push_back(int32_t(chunk[i]));
        left -= n;
    }
}

// llm.c / nanoGPT token shard: 256 int32 header (magic 20240520, version 1, token count), uint16 tokens.
void append_bin_shard(const std::string& path, std::vector<int32_t>& tokens) {
    DataFile f(path, 2);
    constexpr size_t kHeader = 256 * sizeof(int32_t);
    if (f.size() < kHeader)
        throw DataError(fmt::format("{}: truncated header: {} bytes, a token shard starts with {} header bytes", path,
                                    f.size(), kHeader));
    int32_t header[256];
    f.read(header, kHeader);
    if (header[0] != 20240520)
        throw DataError(fmt::format("{}: bad magic {} (expected 20240520, an llm.c/nanoGPT token shard)", path, header[0]));
    if (header[1] != 1) throw DataError(fmt::format("{}: unsupported shard version {} (expected 1)", path, header[1]));
    const int64_t ntok = header[2];
    const uint64_t expected = kHeader + uint64_t(std::max<int64_t>(ntok, 0)) * 2;
    if (ntok <= 0) throw DataError(fmt::format("{}: header says {} tokens", path, ntok));
    if (f.size() != expected)
        throw DataError(fmt::format("{}: header says {} tokens ({} bytes) but the file has {} bytes{}", path, ntok,
                                    expected, f.size(), f.size() < expected ? " (truncated)" : ""));
    std::vector<uint16_t> chunk(kReadChunk / 2);
    tokens.reserve(tokens.size() + size_t(ntok));
    for (int64_t left = ntok; left > 0;) {
        const size_t n = size_t(std::min<int64_t>(left, int64_t(chunk.size())));
        f.read(chunk.data(), n * 2);
        tokens.insert(tokens.end(), chunk.begin(), chunk.begin() + int64_t(n));
        left -= int64_t(n);
    }
}

// A path may be a file, a directory of *.bin shards, or a glob pattern.
std::vector<std::string> expand_bin_paths(const std::string& path) {
    std::error_code ec;
    std::vector<std::string> files;
    if (std::filesystem::is_directory(path, ec)) {
        for (const auto& e : std::filesystem::directory_iterator(path))
            if (e.path().extension() == ".bin") files.push_back(e.path().string());
        if (files.empty()) throw DataError(fmt::format("{}: directory holds no .bin token shards", path));
    } else if (path.find_first_of("*?[") != std::string::npos) {
        glob_t g{};
        int rc = ::glob(path.c_str(), 0, nullptr, &g);
        for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) files.push_back(g.gl_pathv[i]);
        globfree(&g);
        if (files.empty()) throw DataError(fmt::format("{}: pattern matches no files", path));
    } else {
        files.push_back(path);
    }
    std::sort(files.begin(), files.end());
    return files;
}

std::vector<int32_t> load_tokens(DataFormat format, const std::string& path) {
    std::vector<int32_t> tokens;
    if (format == DataFormat::text) {
        append_text_file(path, tokens);
    } else {
        for (const auto& f : expand_bin_paths(path)) append_bin_shard(f, tokens);
    }
    return tokens;
}

// load_tokens with the config key that named the file in front of the message, so a user knows
// which setting to fix: "data.eval_path: /d/val.bin: bad magic 7 (...)".
std::vector<int32_t> load_tokens_for(const char* key, DataFormat format, const std::string& path) {
    try {
        return load_tokens(format, path);
    } catch (const DataError& e) {
        throw DataError(fmt::format("{}: {}", key, e.what()));
    }
}

// Non-overlapping windows of seq_len + 1 tokens (stride seq_len); training visits them in a
// seeded permutation per epoch, eval in order.
class FileSource final : public IndexedSource {
   public:
    FileSource(const DataConfig& cfg, int64_t seq_len, uint64_t seed, int64_t replica, int64_t replicas)
        : IndexedSource(seq_len, replica, replicas), cfg_(cfg), seed_(seed) {
        train_ = load_tokens_for("data.path", cfg.source, cfg.path);
        if (!cfg.eval_path.empty()) {
            eval_ = load_tokens_for("data.eval_path", cfg.source, cfg.eval_path);
        } else {
            const size_t n_eval = size_t(double(train_.size()) * cfg.eval_fraction);
            if (n_eval < size_t(seq_len + 1))
                throw DataError(fmt::format("data.path: {}: the held-out {:.0f}% is {} tokens, shorter than one sequence of {} "
                                            "(set data.eval_path or a larger data.eval_fraction)",
                                            cfg.path, cfg.eval_fraction * 100, n_eval, seq_len + 1));
            eval_.assign(train_.end() - int64_t(n_eval), train_.end());
            train_.resize(train_.size() - n_eval);
        }
        train_windows_ = windows(train_);
        eval_windows_ = windows(eval_);
        if (train_windows_ == 0)
            throw DataError(fmt::format("data.path: {}: {} training tokens, fewer than one sequence of {} (train.seq_len + 1)",
                                        cfg.path, train_.size(), seq_len + 1));
        if (eval_windows_ == 0)
            throw DataError(fmt::format("{}: {}: {} eval tokens, fewer than one sequence of {}",
                                        cfg.eval_path.empty() ? "data.path" : "data.eval_path",
                                        cfg.eval_path.empty() ? cfg.path : cfg.eval_path, eval_.size(), seq_len + 1));
        max_token_ = 0;
        for (int32_t t : train_) max_token_ = std::max(max_token_, t);
        for (int32_t t : eval_) max_token_ = std::max(max_token_, t);
    }

    int64_t vocab_size() const override { return cfg_.source == DataFormat::text ? 256 : int64_t(max_token_) + 1; }
    bool tokens_are_bytes() const override { return cfg_.source == DataFormat::text; }
    uint64_t epoch() const override { return pos_.next_sample / uint64_t(train_windows_); }
    std::string describe() const override {
        return fmt::format("{} {}: {} training tokens ({} windows), {} eval tokens",
                           cfg_.source == DataFormat::text ? "text bytes" : "token shards", cfg_.path, train_.size(),
                           train_windows_, eval_.size());
    }
    std::optional<double> entropy_bound(int64_t, int64_t) const override { return std::nullopt; }

   protected:
    void train_sample(uint64_t index, int32_t* doc) const override {
        const uint64_t n = uint64_t(train_windows_), e = index / n;
        copy_window(train_, permuted(e, index % n), doc);
    }
    void eval_sample(uint64_t index, int32_t* doc) const override {
        copy_window(eval_, int64_t(index % uint64_t(eval_windows_)), doc);
    }

   private:
    int64_t windows(const std::vector<int32_t>& t) const {
        return t.size() < size_t(seq_len_ + 1) ? 0 : int64_t((t.size() - 1) / size_t(seq_len_));
    }
    void copy_window(const std::vector<int32_t>& t, int64_t w, int32_t* doc) const {
        std::copy_n(t.begin() + w * seq_len_, seq_len_ + 1, doc);
    }
    // Window at position i of epoch e's permutation (Fisher-Yates, built once per epoch).
    int64_t permuted(uint64_t e, uint64_t i) const {
        if (perm_epoch_ != e || perm_.empty()) {
            perm_.resize(size_t(train_windows_));
            for (int64_t w = 0; w < train_windows_; ++w) perm_[size_t(w)] = w;
            Rng rng(mix_keys(seed_, kTrainStream, e));
            for (int64_t w = train_windows_ - 1; w > 0; --w)
                std::swap(perm_[size_t(w)], perm_[rng.below(uint64_t(w + 1))]);
            perm_epoch_ = e;
        }
        return perm_[i];
    }

    DataConfig cfg_;
    uint64_t seed_;
    std::vector<int32_t> train_, eval_;
    int64_t train_windows_ = 0, eval_windows_ = 0;
    int32_t max_token_ = 0;
    mutable std::vector<int64_t> perm_;
    mutable uint64_t perm_epoch_ = ~0ull;
};

}  // namespace

std::unique_ptr<DataSource> make_data_source(const DataConfig& cfg, int64_t seq_len, uint64_t seed, int64_t replica,
                                             int64_t replicas) {
    if (seq_len < 1) throw ConfigError(fmt::format("train.seq_len: expected a positive integer, got {}", seq_len));
    if (replica < 0 || replica >= replicas)
        throw ConfigError(fmt::format("data: replica {} outside [0, {})", replica, replicas));
    if (cfg.source == DataFormat::synthetic) return std::make_unique<SyntheticSource>(cfg.synthetic, seq_len, seed, replica, replicas);
    if (cfg.path.empty()) throw ConfigError("data.path: a text or bin source needs a path");
    return std::make_unique<FileSource>(cfg, seq_len, seed, replica, replicas);
}

DataFormat detect_data_format(const std::string& path) {
    if (path.find_first_of("*?[") != std::string::npos) return DataFormat::bin;   // a glob of shards
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)   // missing: the reader names the file; the name is the only hint
        return path.size() >= 4 && path.compare(path.size() - 4, 4, ".bin") == 0 ? DataFormat::bin : DataFormat::text;
    if (S_ISDIR(st.st_mode)) return DataFormat::bin;   // a folder of shards
    if (!S_ISREG(st.st_mode)) return DataFormat::text;   // the reader refuses it, naming the file
    std::ifstream in(path, std::ios::binary);
    int32_t magic = 0;
    in.read(reinterpret_cast<char*>(&magic), sizeof magic);
    return in.gcount() == sizeof magic && magic == 20240520 ? DataFormat::bin : DataFormat::text;
}

}  // namespace moe
