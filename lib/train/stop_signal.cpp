#include "train/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

#include "common/error.h"

namespace moe {

namespace {

std::atomic<int> g_signal{0};

extern "C" void on_stop_signal(int sig) {
    int expected = 0;
    if (!g_signal.compare_exchange_strong(expected, sig)) {
        // Second signal: leave now. Only async-signal-safe calls here.
        const char msg[] = "moe-train: second signal, exiting without saving\n";
        ssize_t ignored = ::write(2, msg, sizeof msg - 1);
        (void)ignored;
        ::_exit(128 + sig);
    }
}

}  // namespace

void install_stop_signal_handlers() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGINT, SIGTERM, SIGUSR1})
        if (::sigaction(sig, &sa, nullptr) != 0)
            throw Error(fmt::format("sigaction({}) failed: {}", sig, std::strerror(errno)));
}

bool stop_requested() { return g_signal.load() != 0; }
int stop_signal() { return g_signal.load(); }

}  // namespace moe
