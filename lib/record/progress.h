// Progress output: `live`, one line (step/total, loss, tokens/s, ETA) redrawn in place with \r and
// ESC[K; otherwise a plain log line every `log_every` steps, so CI and batch logs stay readable.
// The caller decides which (a terminal is not enough: under mpirun every rank has a pty).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace moe {

class Progress {
   public:
    // `quiet`: print nothing (ranks other than 0).
    Progress(int64_t total_steps, int64_t log_every, int64_t first_step, bool quiet, bool live);
    void update(int64_t steps_done, double loss, double tokens_per_s, std::optional<double> eval_loss, bool skipped);
    void finish();

   private:
    int64_t total_, log_every_, first_;
    bool live_;
    bool quiet_;
    bool line_open_ = false;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace moe
