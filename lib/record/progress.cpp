#include "record/progress.h"

#include <fmt/format.h>

#include <cstdio>

namespace moe {

namespace {
std::string format_eta(double seconds) {
    auto s = static_cast<int64_t>(seconds + 0.5);
    return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}
}  // namespace

Progress::Progress(int64_t total_steps, int64_t log_every, int64_t first_step, bool quiet, bool live)
    : total_(total_steps), log_every_(log_every > 0 ? log_every : 1), first_(first_step),
      live_(live), quiet_(quiet), start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t steps_done, double loss, double tokens_per_s, std::optional<double> eval_loss,
                      bool skipped) {
    if (quiet_) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double per_step = elapsed / double(std::max<int64_t>(1, steps_done - first_));
    const std::string eta = format_eta(per_step * double(total_ - steps_done));
    std::string line = fmt::format("step {:>{}}/{} | loss {:.4f} | {:.0f} tok/s | ETA {}", steps_done,
                                   fmt::formatted_size("{}", total_), total_, loss, tokens_per_s, eta);
    if (skipped) line += " | skipped (non-finite loss)";
    if (live_) {
        fmt::print("\r\033[K{}", line);
        line_open_ = true;
        if (eval_loss) {
            fmt::print("\n  eval loss {:.4f}\n", *eval_loss);
            line_open_ = false;
        }
        std::fflush(stdout);
        return;
    }
    if (steps_done % log_every_ == 0 || steps_done == total_ || eval_loss || skipped) {
        if (eval_loss) line += fmt::format(" | eval loss {:.4f}", *eval_loss);
        fmt::print("{}\n", line);
        std::fflush(stdout);
    }
}

void Progress::finish() {
    if (line_open_) fmt::print("\n");
    line_open_ = false;
    std::fflush(stdout);
}

}  // namespace moe
