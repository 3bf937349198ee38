#include "report/run_report.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "common/error.h"
#include "common/iso_time.h"

namespace moe {

namespace {

constexpr size_t kCurvePoints = 50;   // points per curve: enough to see the shape, small enough to read

struct RunData {
    std::string dir, id;
    YAML::Node record;
    std::vector<std::map<std::string, double>> rows;   // metrics.csv, empty cells left out
};

std::vector<std::map<std::string, double>> read_metrics(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::map<std::string, double>> rows;
    if (!in) return rows;   // a run that failed before its first step has none
    std::string line;
    std::getline(in, line);
    std::vector<std::string> columns;
    std::stringstream hs(line);
    for (std::string c; std::getline(hs, c, ',');) columns.push_back(c);
    while (std::getline(in, line)) {
        std::map<std::string, double> row;
        std::stringstream ls(line);
        std::string cell;
        for (size_t i = 0; i < columns.size() && std::getline(ls, cell, ','); ++i) {
            if (cell.empty()) continue;
            try {
                row[columns[i]] = std::stod(cell);
            } catch (const std::exception&) {
                throw Error(fmt::format("{}: bad number '{}' in column {}", path, cell, columns[i]));
            }
        }
        if (row.count("step")) rows.push_back(std::move(row));
    }
    return rows;
}

RunData load_run(const std::string& dir) {
    RunData r;
    r.dir = dir;
    const std::string record = dir + "/record.yaml";
    try {
        r.record = YAML::LoadFile(record);
    } catch (const YAML::Exception& e) {
        throw Error(fmt::format("{}: cannot read the run record: {}", record, e.what()));
    }
    r.id = r.record["run_id"].as<std::string>(dir);
    r.rows = read_metrics(dir + "/metrics.csv");
    return r;
}

std::string num(const YAML::Node& n, const char* fmt_spec = "{:.4f}") {
    if (!n || !n.IsScalar()) return "–";
    try {
        return fmt::format(fmt::runtime(fmt_spec), n.as<double>());
    } catch (const YAML::Exception&) {
        return n.as<std::string>();
    }
}

// Mean of `column` over the rows whose step falls in each of `points` equal buckets of [0, max_step];
// a bucket past the run's end repeats its last value (the curve stays flat where the run stopped).
std::vector<double> resample(const RunData& r, const std::string& column, double max_step, size_t points) {
    std::vector<double> sum(points, 0), n(points, 0);
    for (const auto& row : r.rows) {
        auto it = row.find(column);
        if (it == row.end() || !std::isfinite(it->second)) continue;
        size_t b = std::min(points - 1, size_t(row.at("step") / (max_step + 1) * double(points)));
        sum[b] += it->second;
        n[b] += 1;
    }
    std::vector<double> out(points, NAN);
    double last = NAN;
    for (size_t b = 0; b < points; ++b) {
        if (n[b] > 0) last = sum[b] / n[b];
        out[b] = last;
    }
    for (auto& v : out)   // leading empty buckets take the first value
        if (std::isnan(v)) v = *std::find_if(out.begin(), out.end(), [](double x) { return !std::isnan(x); });
    return out;
}

void loss_chart(std::ostringstream& md, const std::vector<RunData>& runs) {
    double max_step = 0;
    for (const auto& r : runs)
        for (const auto& row : r.rows) max_step = std::max(max_step, row.at("step"));
    std::vector<const RunData*> with_rows;
    for (const auto& r : runs)
        if (!r.rows.empty()) with_rows.push_back(&r);
    if (with_rows.empty()) {
        md << "No run has metrics yet.\n\n";
        return;
    }
    const size_t points = std::min(kCurvePoints, size_t(max_step) + 1);
    double lo = INFINITY, hi = -INFINITY;
    std::vector<std::vector<double>> curves;
    for (const RunData* r : with_rows) {
        curves.push_back(resample(*r, "loss", max_step, points));
        for (double v : curves.back()) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    md << "```mermaid\nxychart-beta\n  title \"Training loss (mean per bucket of steps)\"\n";
    md << fmt::format("  x-axis \"step\" 0 --> {}\n", int64_t(max_step + 1));
    md << fmt::format("  y-axis \"loss (nats/token)\" {:.3f} --> {:.3f}\n", std::max(0.0, lo - 0.05 * (hi - lo)),
                      hi + 0.05 * (hi - lo));
    for (const auto& c : curves) md << fmt::format("  line [{:.4f}]\n", fmt::join(c, ", "));
    md << "```\n\n";
    if (with_rows.size() > 1) {
        md << "Lines in order: ";
        for (size_t i = 0; i < with_rows.size(); ++i) md << (i ? ", " : "") << (i + 1) << ". `" << with_rows[i]->id << "`";
        md << ". A run that stopped earlier stays flat at its last value.\n\n";
    }
}

void eval_table(std::ostringstream& md, const std::vector<RunData>& runs) {
    std::map<int64_t, std::vector<std::string>> by_step;
    for (size_t i = 0; i < runs.size(); ++i)
        for (const auto& row : runs[i].rows)
            if (auto it = row.find("eval_loss"); it != row.end()) {
                auto& cells = by_step[int64_t(row.at("step")) + 1];
                cells.resize(runs.size(), "–");
                cells[i] = fmt::format("{:.4f}", it->second);
            }
    if (by_step.empty()) return;
    md << "## Eval loss\n\n| after step |";
    for (const auto& r : runs) md << " `" << r.id << "` |";
    md << "\n|---:|";
    for (size_t i = 0; i < runs.size(); ++i) md << "---:|";
    md << "\n";
    for (auto& [step, cells] : by_step) {
        cells.resize(runs.size(), "–");
        md << "| " << step << " | " << fmt::format("{}", fmt::join(cells, " | ")) << " |\n";
    }
    md << "\n";
}

void expert_load(std::ostringstream& md, const RunData& r) {
    const YAML::Node load = r.record["summary"]["expert_load"];
    if (!load || !load.IsSequence() || load.size() == 0) return;
    const size_t E = load[0]["share"].size();
    md << "### `" << r.id << "`\n\n";
    md << "```mermaid\nxychart-beta\n  title \"Share of routed tokens per expert (one bar series per layer)\"\n";
    md << "  x-axis [";
    for (size_t e = 0; e < E; ++e) md << (e ? ", " : "") << "e" << e;
    md << "]\n  y-axis \"share\" 0 --> 1\n";
    for (const auto& layer : load) md << fmt::format("  bar [{}]\n", fmt::join(layer["share"].as<std::vector<double>>(), ", "));
    md << "```\n\n| layer |";
    for (size_t e = 0; e < E; ++e) md << " e" << e << " |";
    md << " dropped |\n|---:|";
    for (size_t e = 0; e <= E; ++e) md << "---:|";
    md << "\n";
    for (const auto& layer : load) {
        md << "| " << layer["layer"].as<int64_t>() << " |";
        for (double s : layer["share"].as<std::vector<double>>()) md << fmt::format(" {:.3f} |", s);
        md << fmt::format(" {:.4f} |\n", layer["dropped_fraction"].as<double>());
    }
    md << "\n";
}

}  // namespace

std::string run_report_markdown(const std::vector<std::string>& run_dirs) {
    std::vector<RunData> runs;
    for (const auto& d : run_dirs) runs.push_back(load_run(d));

    std::ostringstream md;
    md << "# moe-train report\n\n" << fmt::format("{} run(s), generated {}.\n\n", runs.size(), iso_time_now());
    md << "| run | status | steps | tokens | tokens/s | train loss | eval loss | entropy bound | eval / bound | "
          "resumed from |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
    for (const auto& r : runs) {
        const YAML::Node s = r.record["summary"];
        md << fmt::format("| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.id,
                          r.record["status"].as<std::string>("?"), num(s["steps"], "{:.0f}"), num(s["tokens"], "{:.0f}"),
                          num(s["tokens_per_s"], "{:.0f}"), num(s["final_train_loss"]), num(s["final_eval_loss"]),
                          num(s["entropy_bound"]), num(s["eval_loss_over_bound"], "{:.3f}"),
                          r.record["resumed_from"].as<std::string>("–"));
    }
    md << "\n## Training loss\n\n";
    loss_chart(md, runs);
    eval_table(md, runs);
    md << "## Expert load at the last eval\n\n";
    for (const auto& r : runs) expert_load(md, r);
    return md.str();
}

}  // namespace moe
