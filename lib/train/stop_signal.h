// Graceful stop on SIGINT, SIGTERM and SIGUSR1 (SLURM's warning signal; Fly.io sends SIGINT):
// the first signal sets a flag that the training loop checks after each step (it then saves a
// checkpoint and exits as "interrupted"); a second signal exits at once, leaving the last
// complete checkpoint untouched (a half-written one is only ever a .tmp-* directory).
#pragma once

namespace moe {

void install_stop_signal_handlers();
bool stop_requested();
// The signal that requested the stop (0 when none).
int stop_signal();

}  // namespace moe
