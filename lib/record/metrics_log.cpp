#include "record/metrics_log.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "common/error.h"

namespace moe {

namespace {
std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + v[i];
    return s;
}
}  // namespace

MetricsLog::MetricsLog(std::string path, std::vector<std::string> columns, int64_t resume_step)
    : path_(std::move(path)), columns_(std::move(columns)) {
    const std::string header = join(columns_);
    std::vector<std::string> kept;
    if (resume_step >= 0 && std::filesystem::exists(path_)) {
        // Keep the header and the rows of steps before the resume point (column 0 is the step).
        std::ifstream in(path_);
        std::string line;
        std::getline(in, line);
        if (line == header) {
            // A row that is not ours (edited, or cut short by a crash) is dropped with a note:
            // the file is a log of this run, and the checkpoint is what resumes it.
            for (int64_t number = 2; std::getline(in, line); ++number) {
                if (line.empty()) continue;
                const std::string first = line.substr(0, line.find(','));
                int64_t step = -1;
                const auto [end, ec] = std::from_chars(first.data(), first.data() + first.size(), step);
                const bool ok = ec == std::errc() && end == first.data() + first.size() && step >= 0 &&
                                std::count(line.begin(), line.end(), ',') == std::ptrdiff_t(columns_.size() - 1);
                if (!ok) {
                    fmt::print(stderr, "moe-train: {}:{}: dropping a malformed row ({} columns, step \"{}\")\n", path_,
                               number, std::count(line.begin(), line.end(), ',') + 1, first);
                    continue;
                }
                if (step < resume_step) kept.push_back(line);
            }
        }
    }
    out_.open(path_, std::ios::trunc);
    if (!out_) throw Error(fmt::format("{}: cannot open metrics file for writing", path_));
    out_ << header << "\n";
    for (const auto& l : kept) out_ << l << "\n";
    out_.flush();
}

void MetricsLog::append(const std::map<std::string, double>& row) {
    std::ostringstream line;
    line.precision(9);
    for (size_t i = 0; i < columns_.size(); ++i) {
        if (i) line << ",";
        auto it = row.find(columns_[i]);
        if (it != row.end() && !std::isnan(it->second)) line << it->second;
    }
    out_ << line.str() << "\n";
    out_.flush();
}

}  // namespace moe
