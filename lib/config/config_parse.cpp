// YAML -> Config. Walks the document against config_schema(); every error names the key path,
// what was expected, what was found and where (file:line, or the --set override).
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/fnv1a.h"
#include "config/config.h"
#include "config/config_schema.h"
#include "data/data_source.h"

namespace moe {

namespace {

std::string describe_node(const YAML::Node& n) {
    if (n.IsNull()) return "nothing";
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a map";
    return fmt::format("\"{}\"", n.Scalar());
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

class Parser {
   public:
    Parser(Config& cfg, std::string origin) : cfg_(cfg), file_(std::move(origin)) {
        for (const auto& f : config_schema()) {
            fields_[f.path] = &f;
            for (size_t dot = f.path.find('.'); dot != std::string::npos; dot = f.path.find('.', dot + 1))
                sections_.insert(f.path.substr(0, dot));
        }
    }

    void parse_document(const YAML::Node& root) {
        if (!root || root.IsNull()) return;  // empty file: all defaults
        if (!root.IsMap()) throw ConfigError(fmt::format("{}: expected a map of sections at the top level, got {} ({})",
                                                         file_, describe_node(root), where(root)));
        walk(root, "");
    }

    void apply_override(const std::string& assignment) {
        const std::string origin = "--set " + assignment;
        auto eq = assignment.find('=');
        if (eq == std::string::npos || eq == 0)
            throw ConfigError(fmt::format("{}: expected key=value, e.g. --set model.n_layers=6", origin));
        const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
        // A whole section: --set 'model={n_layers: 2}' sets each key in it, checked by name.
        if (sections_.count(key)) {
            YAML::Node section;
            try {
                section = YAML::Load(text);
            } catch (const YAML::Exception& e) {
                throw ConfigError(fmt::format("{}: value is not valid YAML: {} ({})", key, e.msg, origin));
            }
            if (!section.IsMap())
                throw ConfigError(fmt::format("{}: is a section; expected a map of its keys, got {} ({})", key,
                                              describe_node(section), origin));
            override_origin_ = origin;
            walk(section, key + ".");
            override_origin_.clear();
            return;
        }
        auto it = fields_.find(key);
        if (it == fields_.end()) throw ConfigError(unknown_key_message(key, origin));
        // The value is read as YAML (so lists and quoted strings work); when that is not valid
        // YAML or not a scalar, a string key takes the text as it is ("--set checkpoint.dir=/a: b").
        YAML::Node value;
        std::string yaml_error;
        try {
            value = YAML::Load(text);
        } catch (const YAML::Exception& e) {
            yaml_error = e.msg;
        }
        if (yaml_error.empty() && (value.IsScalar() || value.IsSequence() || value.IsNull())) {
            set(*it->second, value, origin);
            return;
        }
        try {
            set(*it->second, YAML::Node(text), origin);
        } catch (const ConfigError&) {
            if (!yaml_error.empty())
                throw ConfigError(fmt::format("{}: value is not valid YAML: {} ({})", key, yaml_error, origin));
            set(*it->second, value, origin);   // throws naming what was expected
        }
    }

    const std::map<std::string, std::string>& origins() const { return origins_; }

   private:
    std::string where(const YAML::Node& n) const {
        if (!override_origin_.empty()) return override_origin_;
        return n.Mark().is_null() ? file_ : fmt::format("{}:{}", file_, n.Mark().line + 1);
    }

    std::string unknown_key_message(const std::string& key, const std::string& origin) const {
        std::string best;
        size_t best_d = 4;
        for (const auto& [path, f] : fields_) {
            size_t d = edit_distance(key, path);
            if (d < best_d) best_d = d, best = path;
        }
        for (const auto& s : sections_) {
            size_t d = edit_distance(key, s);
            if (d < best_d) best_d = d, best = s;
        }
        return fmt::format("{}: unknown key{} ({})", key, best.empty() ? "" : fmt::format(" (did you mean {}?)", best),
                           origin);
    }

    void walk(const YAML::Node& map, const std::string& prefix) {
        // yaml-cpp keeps both entries of a repeated key; one silently winning is a trap.
        std::map<std::string, std::string> seen;   // key -> where it was first set
        for (const auto& kv : map) {
            if (!kv.first.IsScalar())
                throw ConfigError(fmt::format("{}{}: a key must be a name, got {} ({})", prefix,
                                              prefix.empty() ? "(top level)" : "", describe_node(kv.first),
                                              where(kv.first)));
            const std::string key = prefix + kv.first.Scalar();
            const YAML::Node& value = kv.second;
            if (auto [it, fresh] = seen.emplace(key, where(kv.first)); !fresh)
                throw ConfigError(fmt::format("{}: key appears twice (first at {}) ({})", key, it->second, where(kv.first)));
            if (sections_.count(key)) {
                if (value.IsNull()) continue;  // an empty section keeps its defaults
                if (!value.IsMap())
                    throw ConfigError(fmt::format("{}: expected a map of keys, got {} ({})", key, describe_node(value),
                                                  where(kv.first)));
                walk(value, key + ".");
                continue;
            }
            auto it = fields_.find(key);
            if (it == fields_.end()) throw ConfigError(unknown_key_message(key, where(kv.first)));
            set(*it->second, value, where(value.IsNull() ? kv.first : value));
        }
    }

    void set(const ConfigField& f, const YAML::Node& value, const std::string& origin) {
        f.read(cfg_, value, [&](const std::string& expected) {
            throw ConfigError(fmt::format("{}: expected {}, got {} ({})", f.path, expected, describe_node(value), origin));
        });
        origins_[f.path] = origin;
    }

    Config& cfg_;
    std::string file_;
    std::map<std::string, const ConfigField*> fields_;
    std::set<std::string> sections_;
    std::map<std::string, std::string> origins_;
    std::string override_origin_;   // set while a --set section value is walked
};

// Constraints between keys; each message names both keys and where each was set.
void check_cross_fields(const Config& c, const std::map<std::string, std::string>& origins, const std::string& file) {
    auto at = [&](const std::string& key) {
        auto it = origins.find(key);
        return it != origins.end() ? it->second : fmt::format("{}: default", file);
    };
    auto fail = [&](const std::string& a, const std::string& b, const std::string& what) {
        throw ConfigError(fmt::format("{} / {}: {} ({}; {})", a, b, what, at(a), at(b)));
    };
    const auto& m = c.model;
    if (m.d_model % m.n_heads != 0)
        fail("model.d_model", "model.n_heads", fmt::format("d_model {} is not divisible by n_heads {}", m.d_model, m.n_heads));
    if (m.n_heads % m.n_kv_heads != 0)
        fail("model.n_heads", "model.n_kv_heads",
             fmt::format("n_heads {} is not divisible by n_kv_heads {}", m.n_heads, m.n_kv_heads));
    if (m.head_dim() % 2 != 0)
        fail("model.d_model", "model.n_heads", fmt::format("head dim {} must be even for rotary embeddings", m.head_dim()));
    if (m.moe.top_k > m.moe.num_experts)
        fail("moe.top_k", "moe.num_experts",
             fmt::format("top_k {} exceeds num_experts {}", m.moe.top_k, m.moe.num_experts));
    if (m.moe.first_dense_layers > m.n_layers)
        fail("moe.first_dense_layers", "model.n_layers",
             fmt::format("{} dense layers in a {}-layer model", m.moe.first_dense_layers, m.n_layers));
    if (c.train.seq_len > m.max_seq_len)
        fail("train.seq_len", "model.max_seq_len",
             fmt::format("seq_len {} exceeds max_seq_len {}", c.train.seq_len, m.max_seq_len));
    if (c.train.micro_batches > c.train.batch_size)
        fail("train.micro_batches", "train.batch_size",
             fmt::format("{} micro-batches of a batch of {}", c.train.micro_batches, c.train.batch_size));
    if (origins.count("data.source") && c.data.source == DataFormat::synthetic && !c.data.path.empty())
        fail("data.source", "data.path",
             fmt::format("the synthetic corpus reads no file, but data.path names {} (drop one of the two)", c.data.path));
    if (c.data.source != DataFormat::synthetic && c.data.path.empty())
        fail("data.source", "data.path", "a text or bin source needs data.path");
    if (c.data.source == DataFormat::synthetic && c.data.synthetic.vocab > m.vocab_size)
        fail("data.synthetic.vocab", "model.vocab_size",
             fmt::format("corpus vocabulary {} exceeds the model's {}", c.data.synthetic.vocab, m.vocab_size));
    if (c.data.synthetic.branching > c.data.synthetic.vocab)
        fail("data.synthetic.branching", "data.synthetic.vocab",
             fmt::format("branching {} exceeds the vocabulary {}", c.data.synthetic.branching, c.data.synthetic.vocab));
    if (!c.parallel.partition.empty()) {
        int64_t sum = 0;
        for (int64_t v : c.parallel.partition) sum += v;
        if (static_cast<int64_t>(c.parallel.partition.size()) != c.parallel.pp || sum != m.n_layers)
            fail("parallel.partition", "parallel.pp",
                 fmt::format("{} entries summing to {}, but pp is {} and n_layers is {}", c.parallel.partition.size(),
                             sum, c.parallel.pp, m.n_layers));
    }
    if (c.parallel.pp > m.n_layers)
        fail("parallel.pp", "model.n_layers",
             fmt::format("{} pipeline stages for {} layers (every stage holds at least one)", c.parallel.pp, m.n_layers));
    if (c.parallel.pp > 1 && m.tie_embeddings)
        fail("model.tie_embeddings", "parallel.pp",
             fmt::format("tied embeddings need the embedding and lm_head on one stage, but pp is {}", c.parallel.pp));
    const auto& z = c.compress;
    if (!(z.min_rank <= z.rank && z.rank <= z.max_rank))
        fail("compress.rank", "compress.min_rank",
             fmt::format("need min_rank <= rank <= max_rank, got {} <= {} <= {}", z.min_rank, z.rank, z.max_rank));
    const auto& a = c.async;
    const int64_t replicas = c.parallel.ep > 0 ? c.parallel.dp / c.parallel.ep : c.parallel.dp;
    if (a.enabled && replicas < 2)
        fail("async.enabled", "parallel.dp",
             fmt::format("asynchronous SGD runs across model replicas, but dp / ep = {} / {} = {} (nothing to be "
                         "asynchronous across: raise dp)", c.parallel.dp, c.parallel.ep, replicas));
    // Resumable checkpoints need windows of a fixed number of steps (wall-clock windows do not
    // repeat) and a step end with no merge in flight (windows of 1 step always have one, unless
    // each merge blocks, as compressed merges do).
    if (a.enabled && c.checkpoint.every > 0 && a.window_steps == 0)
        fail("async.window_steps", "checkpoint.every",
             fmt::format("periodic checkpoints of an asynchronous run need step windows (async.window_steps > 0); "
                         "with wall-clock windows only the final anchor is saved (checkpoint.every = {}: use 0)",
                         c.checkpoint.every));
    if (a.enabled && c.checkpoint.every > 0 && a.window_steps == 1 && !a.blocking && !c.compress.enabled)
        fail("async.window_steps", "checkpoint.every",
             "windows of 1 step always have a merge in flight, so no step can be saved: use async.blocking, "
             "longer windows or checkpoint.every = 0");
    if (!c.simulate.slowdown.empty() && int64_t(c.simulate.slowdown.size()) != replicas)
        fail("simulate.slowdown", "parallel.dp",
             fmt::format("{} factors, but there are dp / ep = {} model replicas (one factor each)",
                         c.simulate.slowdown.size(), replicas));
    if (z.energy_low >= z.energy_high)
        fail("compress.energy_low", "compress.energy_high",
             fmt::format("energy_low {} must be below energy_high {}", z.energy_low, z.energy_high));
}

Config parse_root(const YAML::Node& root, const std::string& origin, const std::vector<std::string>& overrides) {
    Config cfg;
    cfg.source_path = origin;
    cfg.overrides = overrides;
    Parser parser(cfg, origin);
    parser.parse_document(root);
    for (const auto& o : overrides) parser.apply_override(o);
    // A data.path without data.source: the file says what it is (a path is never silently ignored).
    if (!parser.origins().count("data.source") && !cfg.data.path.empty())
        cfg.data.source = detect_data_format(cfg.data.path);
    check_cross_fields(cfg, parser.origins(), origin);
    return cfg;
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& origin, const std::vector<std::string>& overrides) {
    YAML::Node root;
    try {
        root = YAML::Load(yaml_text);
    } catch (const YAML::Exception& e) {
        throw ConfigError(fmt::format("{}:{}: YAML syntax error: {}", origin, e.mark.line + 1, e.msg));
    }
    return parse_root(root, origin, overrides);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
    // A config is a small text file: anything else (a folder, a device, a huge file) is refused
    // before it is read.
    constexpr std::uintmax_t kMaxConfigBytes = 1 << 20;
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(status)) throw ConfigError(fmt::format("{}: no such config file", path));
    if (std::filesystem::is_directory(status))
        throw ConfigError(fmt::format("{}: is a directory, not a config file", path));
    if (!std::filesystem::is_regular_file(status))
        throw ConfigError(fmt::format("{}: is not a regular file (a config is a YAML file)", path));
    const std::uintmax_t size = std::filesystem::file_size(path, ec);
    if (ec) throw ConfigError(fmt::format("{}: cannot read config file: {}", path, ec.message()));
    if (size > kMaxConfigBytes)
        throw ConfigError(fmt::format("{}: {} bytes, more than a config file may hold ({} bytes)", path, size,
                                      kMaxConfigBytes));
    std::ifstream in(path);
    if (!in) throw ConfigError(fmt::format("{}: cannot open config file", path));
    std::stringstream text;
    text << in.rdbuf();
    if (in.bad()) throw ConfigError(fmt::format("{}: cannot read config file", path));
    YAML::Node root;
    try {
        root = YAML::Load(text.str());
    } catch (const YAML::Exception& e) {
        throw ConfigError(fmt::format("{}:{}: YAML syntax error: {}", path, e.mark.line + 1, e.msg));
    }
    // An empty file would train a default model nobody asked for.
    if (!root || root.IsNull())
        throw ConfigError(fmt::format("{}: is empty (no keys, only comments or nothing); start from configs/tiny.yaml",
                                      path));
    return parse_root(root, path, overrides);
}

std::string config_to_yaml(const Config& cfg) {
    // A map from the start: copies of a default-constructed (null) node do not share storage,
    // so the chain below would otherwise build into copies and leave `root` empty.
    YAML::Node root(YAML::NodeType::Map);
    for (const auto& f : config_schema()) {
        // Walk "a.b.c" down the node tree, creating maps as needed.
        std::vector<std::string> parts;
        for (size_t start = 0, dot;; start = dot + 1) {
            dot = f.path.find('.', start);
            parts.push_back(f.path.substr(start, dot - start));
            if (dot == std::string::npos) break;
        }
        std::vector<YAML::Node> chain{root};
        for (size_t i = 0; i + 1 < parts.size(); ++i) chain.push_back(chain.back()[parts[i]]);
        chain.back()[parts.back()] = f.write(cfg);
    }
    YAML::Emitter out;
    out << root;
    return out.c_str();
}

std::string model_config_hash(const Config& cfg) {
    // FNV-1a 64 of the emitted model and moe sections: the keys that fix parameter shapes and semantics.
    YAML::Node all = YAML::Load(config_to_yaml(cfg));
    YAML::Emitter out;
    out << YAML::BeginMap << YAML::Key << "model" << YAML::Value << all["model"] << YAML::Key << "moe" << YAML::Value
        << all["moe"] << YAML::EndMap;
    return fmt::format("{:016x}", fnv1a(std::string_view(out.c_str(), out.size()), kFnv1aLegacyOffset));
}

}  // namespace moe
