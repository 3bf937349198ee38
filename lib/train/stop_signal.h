// Graceful stop on SIGINT, SIGTERM and SIGUSR1 (SLURM's warning signal; Fly.io sends SIGINT):
// the first signal sets a flag that the training loop checks after each step (it then saves a
// checkpoint and exits as "interrupted"); a second signal exits at once, leaving the last
// complete checkpoint untouched (a half-written one is only ever a .tmp-* directory).
#pragma once

#include <string>

namespace moe {

void install_stop_signal_handlers();

// What the second signal leaves behind before it exits: `text` written to `path` (temp file,
// fsync, rename; all async-signal-safe), so a run record never stays "running" after such an
// exit. Each call replaces the previous words; clear_last_words() drops them.
void set_last_words(const std::string& path, const std::string& text);
void clear_last_words();
bool stop_requested();
// The signal that requested the stop (0 when none).
int stop_signal();

}  // namespace moe
