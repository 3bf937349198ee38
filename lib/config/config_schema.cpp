#include "config/config_schema.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace moe {

namespace {

using Fail = std::function<void(const std::string&)>;

bool parse_int(const YAML::Node& n, int64_t* out) {
    if (!n.IsScalar()) return false;
    const std::string& s = n.Scalar();
    auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool parse_real(const YAML::Node& n, double* out) {
    if (!n.IsScalar() || n.Scalar().empty()) return false;
    try {
        size_t used = 0;
        *out = std::stod(n.Scalar(), &used);
        return used == n.Scalar().size() && std::isfinite(*out);
    } catch (const std::exception&) {
        return false;
    }
}

// Integer field in [lo, hi].
template <typename Get>
ConfigField int_field(std::string path, Get get, int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max()) {
    const bool unbounded = hi == std::numeric_limits<int64_t>::max();
    std::string kind = unbounded && lo == 1   ? "a positive integer"
                       : unbounded && lo == 0 ? "a non-negative integer"
                       : unbounded            ? fmt::format("an integer >= {}", lo)
                                              : fmt::format("an integer in [{}, {}]", lo, hi);
    return ConfigField{std::move(path), kind,
                       [get, lo, hi, kind](Config& c, const YAML::Node& n, const Fail& fail) {
                           int64_t v = 0;
                           if (!parse_int(n, &v) || v < lo || v > hi) fail(kind);
                           get(c) = static_cast<std::remove_reference_t<decltype(get(c))>>(v);
                       },
                       [get](const Config& c) { return YAML::Node(get(const_cast<Config&>(c))); }};
}

enum class Bound { closed, open, none };

// Real field between lo and hi, each bound open, closed or absent.
template <typename Get>
ConfigField real_field(std::string path, Get get, double lo, Bound lo_b, double hi = 0, Bound hi_b = Bound::none) {
    std::string kind = "a number";
    if (lo_b != Bound::none && hi_b != Bound::none)
        kind = fmt::format("a number in {}{}, {}{}", lo_b == Bound::open ? "(" : "[", lo, hi, hi_b == Bound::open ? ")" : "]");
    else if (lo_b != Bound::none)
        kind = lo_b == Bound::open ? fmt::format("a number > {}", lo) : fmt::format("a number >= {}", lo);
    return ConfigField{std::move(path), kind,
                       [=](Config& c, const YAML::Node& n, const Fail& fail) {
                           double v = 0;
                           bool ok = parse_real(n, &v);
                           if (ok && lo_b == Bound::open) ok = v > lo;
                           if (ok && lo_b == Bound::closed) ok = v >= lo;
                           if (ok && hi_b == Bound::open) ok = v < hi;
                           if (ok && hi_b == Bound::closed) ok = v <= hi;
                           if (!ok) fail(kind);
                           get(c) = v;
                       },
                       // fmt's shortest form that reads back exactly: 0.05, not 0.050000000000000003.
                       [get](const Config& c) { return YAML::Node(fmt::format("{}", get(const_cast<Config&>(c)))); }};
}

template <typename Get>
ConfigField bool_field(std::string path, Get get) {
    return ConfigField{std::move(path), "true or false",
                       [get](Config& c, const YAML::Node& n, const Fail& fail) {
                           bool v = false;
                           if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) fail("true or false");
                           get(c) = v;
                       },
                       [get](const Config& c) { return YAML::Node(get(const_cast<Config&>(c))); }};
}

template <typename Get>
ConfigField string_field(std::string path, Get get) {
    return ConfigField{std::move(path), "a string",
                       [get](Config& c, const YAML::Node& n, const Fail& fail) {
                           if (!n.IsScalar() && !n.IsNull()) fail("a string");
                           get(c) = n.IsNull() ? std::string() : n.Scalar();
                       },
                       [get](const Config& c) { return YAML::Node(get(const_cast<Config&>(c))); }};
}

template <typename E, typename Get>
ConfigField enum_field(std::string path, Get get, std::vector<std::pair<std::string, E>> names) {
    std::string kind = "one of";
    for (size_t i = 0; i < names.size(); ++i) kind += (i ? ", " : " ") + names[i].first;
    return ConfigField{std::move(path), kind,
                       [get, names, kind](Config& c, const YAML::Node& n, const Fail& fail) {
                           if (n.IsScalar())
                               for (const auto& [name, value] : names)
                                   if (n.Scalar() == name) {
                                       get(c) = value;
                                       return;
                                   }
                           fail(kind);
                       },
                       [get, names](const Config& c) {
                           for (const auto& [name, value] : names)
                               if (get(const_cast<Config&>(c)) == value) return YAML::Node(name);
                           return YAML::Node();
                       }};
}

// simulate.slowdown: factors >= 1, one per model replica.
template <typename Get>
ConfigField slowdown_list_field(std::string path, Get get) {
    const std::string kind = "a list of numbers >= 1";
    return ConfigField{std::move(path), kind,
                       [get, kind](Config& c, const YAML::Node& n, const Fail& fail) {
                           if (!n.IsSequence() && !n.IsNull()) fail(kind);
                           std::vector<double> out;
                           for (const auto& item : n) {
                               double v = 0;
                               if (!parse_real(item, &v) || v < 1 || v > 1e3) fail(kind + " (at most 1000)");
                               out.push_back(v);
                           }
                           get(c) = out;
                       },
                       [get](const Config& c) {
                           YAML::Node n(YAML::NodeType::Sequence);
                           for (double v : get(const_cast<Config&>(c))) n.push_back(v);
                           n.SetStyle(YAML::EmitterStyle::Flow);
                           return n;
                       }};
}

template <typename Get>
ConfigField int_list_field(std::string path, Get get) {
    const std::string kind = "a list of positive integers";
    return ConfigField{std::move(path), kind,
                       [get, kind](Config& c, const YAML::Node& n, const Fail& fail) {
                           if (!n.IsSequence() && !n.IsNull()) fail(kind);
                           std::vector<int64_t> out;
                           for (const auto& item : n) {
                               int64_t v = 0;
                               if (!parse_int(item, &v) || v < 1) fail(kind);
                               out.push_back(v);
                           }
                           get(c) = out;
                       },
                       [get](const Config& c) {
                           YAML::Node n(YAML::NodeType::Sequence);
                           for (int64_t v : get(const_cast<Config&>(c))) n.push_back(v);
                           n.SetStyle(YAML::EmitterStyle::Flow);
                           return n;
                       }};
}

#define FIELD(expr) [](Config& c) -> auto& { return c.expr; }

std::vector<ConfigField> build_schema() {
    const int64_t kMax = std::numeric_limits<int64_t>::max();
    return {
        int_field("model.vocab_size", FIELD(model.vocab_size), 2),
        int_field("model.d_model", FIELD(model.d_model), 1),
        int_field("model.n_layers", FIELD(model.n_layers), 1),
        int_field("model.n_heads", FIELD(model.n_heads), 1),
        int_field("model.n_kv_heads", FIELD(model.n_kv_heads), 1),
        int_field("model.max_seq_len", FIELD(model.max_seq_len), 1),
        real_field("model.rope_theta", FIELD(model.rope_theta), 0, Bound::open),
        real_field("model.norm_eps", FIELD(model.norm_eps), 0, Bound::open),
        real_field("model.init_std", FIELD(model.init_std), 0, Bound::open),
        bool_field("model.tie_embeddings", FIELD(model.tie_embeddings)),

        int_field("moe.num_experts", FIELD(model.moe.num_experts), 1),
        int_field("moe.top_k", FIELD(model.moe.top_k), 1),
        int_field("moe.ffn_hidden", FIELD(model.moe.ffn_hidden), 1),
        int_field("moe.shared_experts", FIELD(model.moe.shared_experts), 0),
        int_field("moe.first_dense_layers", FIELD(model.moe.first_dense_layers), 0),
        int_field("moe.dense_ffn_hidden", FIELD(model.moe.dense_ffn_hidden), 0),
        bool_field("moe.renormalize", FIELD(model.moe.renormalize)),
        real_field("moe.capacity_factor", FIELD(model.moe.capacity_factor), 0, Bound::closed),
        real_field("moe.aux_loss_coef", FIELD(model.moe.aux_loss_coef), 0, Bound::closed),
        real_field("moe.z_loss_coef", FIELD(model.moe.z_loss_coef), 0, Bound::closed),
        enum_field<Routing>("moe.routing", FIELD(model.moe.routing),
                            {{"token_choice", Routing::token_choice}, {"expert_choice", Routing::expert_choice}}),
        enum_field<AuxLossScope>("moe.aux_loss_scope", FIELD(model.moe.aux_loss_scope),
                                 {{"local", AuxLossScope::local}, {"global", AuxLossScope::global}}),

        enum_field<DataFormat>("data.source", FIELD(data.source),
                               {{"synthetic", DataFormat::synthetic}, {"text", DataFormat::text}, {"bin", DataFormat::bin}}),
        string_field("data.path", FIELD(data.path)),
        string_field("data.eval_path", FIELD(data.eval_path)),
        real_field("data.eval_fraction", FIELD(data.eval_fraction), 0, Bound::open, 1, Bound::open),
        int_field("data.synthetic.vocab", FIELD(data.synthetic.vocab), 2),
        int_field("data.synthetic.num_sources", FIELD(data.synthetic.num_sources), 1),
        int_field("data.synthetic.branching", FIELD(data.synthetic.branching), 1),
        real_field("data.synthetic.concentration", FIELD(data.synthetic.concentration), 0, Bound::open),
        int_field("data.synthetic.seed", FIELD(data.synthetic.seed), 0),

        enum_field<OptimizerKind>("optim.name", FIELD(optim.name),
                                  {{"adamw", OptimizerKind::adamw}, {"sgd", OptimizerKind::sgd}}),
        real_field("optim.lr", FIELD(optim.lr), 0, Bound::open),
        real_field("optim.min_lr_ratio", FIELD(optim.min_lr_ratio), 0, Bound::closed, 1, Bound::closed),
        int_field("optim.warmup_steps", FIELD(optim.warmup_steps), 0),
        real_field("optim.weight_decay", FIELD(optim.weight_decay), 0, Bound::closed),
        real_field("optim.beta1", FIELD(optim.beta1), 0, Bound::closed, 1, Bound::open),
        real_field("optim.beta2", FIELD(optim.beta2), 0, Bound::closed, 1, Bound::open),
        real_field("optim.eps", FIELD(optim.eps), 0, Bound::open),
        real_field("optim.momentum", FIELD(optim.momentum), 0, Bound::closed, 1, Bound::open),
        real_field("optim.grad_clip", FIELD(optim.grad_clip), 0, Bound::closed),

        int_field("train.steps", FIELD(train.steps), 1),
        int_field("train.batch_size", FIELD(train.batch_size), 1),
        int_field("train.micro_batches", FIELD(train.micro_batches), 1),
        int_field("train.seq_len", FIELD(train.seq_len), 1),
        int_field("train.seed", FIELD(train.seed), 0),
        int_field("train.eval_every", FIELD(train.eval_every), 0),
        int_field("train.eval_batches", FIELD(train.eval_batches), 1),
        int_field("train.log_every", FIELD(train.log_every), 1),
        int_field("train.threads", FIELD(train.threads), 0, 4096),
        int_field("train.max_bad_steps", FIELD(train.max_bad_steps), 0),
        enum_field<DeviceKind>("train.device", FIELD(train.device),
                               {{"auto", DeviceKind::auto_detect}, {"cpu", DeviceKind::cpu}, {"cuda", DeviceKind::cuda}}),
        enum_field<Precision>("train.precision", FIELD(train.precision),
                              {{"fp32", Precision::fp32}, {"bf16", Precision::bf16}}),
        string_field("train.run_dir", FIELD(train.run_dir)),
        string_field("train.run_id", FIELD(train.run_id)),

        int_field("checkpoint.every", FIELD(checkpoint.every), 0),
        string_field("checkpoint.dir", FIELD(checkpoint.dir)),
        int_field("checkpoint.keep", FIELD(checkpoint.keep), 2),
        bool_field("checkpoint.async", FIELD(checkpoint.async)),
        enum_field<CheckpointStorage>("checkpoint.storage", FIELD(checkpoint.storage),
                                      {{"auto", CheckpointStorage::auto_detect},
                                       {"shared", CheckpointStorage::shared},
                                       {"per_host", CheckpointStorage::per_host}}),
        bool_field("checkpoint.save_final", FIELD(checkpoint.save_final)),

        int_field("parallel.pp", FIELD(parallel.pp), 1),
        int_field("parallel.dp", FIELD(parallel.dp), 1),
        int_field("parallel.ep", FIELD(parallel.ep), 1),
        enum_field<ScheduleKind>("parallel.schedule", FIELD(parallel.schedule),
                                     {{"gpipe", ScheduleKind::gpipe}, {"1f1b", ScheduleKind::one_f_one_b}}),
        int_list_field("parallel.partition", FIELD(parallel.partition)),
        real_field("parallel.bucket_mb", FIELD(parallel.bucket_mb), 0, Bound::open),
        bool_field("parallel.overlap_grad_sync", FIELD(parallel.overlap_grad_sync)),

        bool_field("compress.enabled", FIELD(compress.enabled)),
        int_field("compress.rank", FIELD(compress.rank), 1),
        int_field("compress.min_rank", FIELD(compress.min_rank), 1),
        int_field("compress.max_rank", FIELD(compress.max_rank), 1),
        real_field("compress.energy_low", FIELD(compress.energy_low), 0, Bound::open, 1, Bound::open),
        real_field("compress.energy_high", FIELD(compress.energy_high), 0, Bound::open, 1, Bound::closed),
        int_field("compress.refresh_every", FIELD(compress.refresh_every), 0),
        int_field("compress.start_step", FIELD(compress.start_step), 0),
        real_field("compress.min_ratio", FIELD(compress.min_ratio), 0, Bound::open),
        int_field("compress.seed", FIELD(compress.seed), 0),

        bool_field("async.enabled", FIELD(async.enabled)),
        real_field("async.window_seconds", FIELD(async.window_seconds), 0, Bound::open),
        int_field("async.window_steps", FIELD(async.window_steps), 0),
        real_field("async.outer_lr", FIELD(async.outer_lr), 0, Bound::open),
        real_field("async.outer_momentum", FIELD(async.outer_momentum), 0, Bound::closed, 1, Bound::open),
        real_field("async.staleness_alpha", FIELD(async.staleness_alpha), 0, Bound::closed),
        bool_field("async.blocking", FIELD(async.blocking)),

        slowdown_list_field("simulate.slowdown", FIELD(simulate.slowdown)),
    };
    (void)kMax;
}

#undef FIELD

}  // namespace

const std::vector<ConfigField>& config_schema() {
    static const std::vector<ConfigField> schema = build_schema();
    return schema;
}

}  // namespace moe
