#include "train/run_record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "common/error.h"

namespace moe {

namespace {

void fsync_path(const std::string& path, int flags) {
    int fd = ::open(path.c_str(), flags);
    if (fd < 0) throw Error(fmt::format("{}: cannot open for fsync: {}", path, std::strerror(errno)));
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) throw Error(fmt::format("{}: fsync failed: {}", path, std::strerror(err)));
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& content) {
    const std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) throw Error(fmt::format("{}: cannot create: {}", tmp, std::strerror(errno)));
    size_t done = 0;
    while (done < content.size()) {
        ssize_t n = ::write(fd, content.data() + done, content.size() - done);
        if (n < 0) {
            int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw Error(fmt::format("{}: write failed: {}", tmp, std::strerror(err)));
        }
        done += size_t(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw Error(fmt::format("{}: fsync/close failed: {}", tmp, std::strerror(err)));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0)
        throw Error(fmt::format("{}: rename from {} failed: {}", path, tmp, std::strerror(errno)));
    auto parent = std::filesystem::path(path).parent_path().string();
    fsync_path(parent.empty() ? "." : parent, O_RDONLY | O_DIRECTORY);
}

std::string iso_time_now() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
    return buf;
}

RunRecord::RunRecord(std::string dir) : dir_(std::move(dir)) {}

void RunRecord::write() const {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) throw Error(fmt::format("{}: cannot create run directory: {}", dir_, ec.message()));
    YAML::Emitter out;
    out << root_;
    write_file_atomically(path(), std::string(out.c_str()) + "\n");
}

}  // namespace moe
