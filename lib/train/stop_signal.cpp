#include "train/stop_signal.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.h"

namespace moe {

namespace {

std::atomic<int> g_signal{0};

// Published whole by an atomic pointer swap; replaced ones are kept (a handler may be reading
// one), a few per run.
struct LastWords {
    std::string path, tmp_path, text;
};
std::atomic<const LastWords*> g_last_words{nullptr};
std::vector<std::unique_ptr<LastWords>>& retired_last_words() {
    static std::vector<std::unique_ptr<LastWords>> retired;
    return retired;
}

void write_last_words() {
    const LastWords* w = g_last_words.load();
    if (!w) return;
    const int fd = ::open(w->tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    const char* p = w->text.data();
    size_t left = w->text.size();
    bool ok = true;
    while (left > 0 && ok) {
        const ssize_t n = ::write(fd, p, left);
        if (n > 0) {
            p += n;
            left -= size_t(n);
        } else if (n < 0 && errno != EINTR) {
            ok = false;
        }
    }
    ok = ::fsync(fd) == 0 && ok;
    ::close(fd);
    if (ok) ::rename(w->tmp_path.c_str(), w->path.c_str());
    else ::unlink(w->tmp_path.c_str());
}

extern "C" void on_stop_signal(int sig) {
    int expected = 0;
    if (!g_signal.compare_exchange_strong(expected, sig)) {
        // Second signal: leave now. Only async-signal-safe calls here.
        const char msg[] = "moe-train: second signal, exiting without saving\n";
        ssize_t ignored = ::write(2, msg, sizeof msg - 1);
        (void)ignored;
        write_last_words();
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

void set_last_words(const std::string& path, const std::string& text) {
    auto words = std::make_unique<LastWords>(LastWords{path, path + ".tmp-signal", text});
    g_last_words.store(words.get());
    retired_last_words().push_back(std::move(words));
}

void clear_last_words() { g_last_words.store(nullptr); }

bool stop_requested() { return g_signal.load() != 0; }
int stop_signal() { return g_signal.load(); }

}  // namespace moe
