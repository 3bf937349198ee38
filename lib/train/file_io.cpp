#include "train/file_io.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

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

std::string parent_or_dot(const std::string& path) {
    auto parent = std::filesystem::path(path).parent_path().string();
    return parent.empty() ? "." : parent;
}

}  // namespace

void fsync_file(const std::string& path) { fsync_path(path, O_RDONLY); }
void fsync_directory(const std::string& path) { fsync_path(path, O_RDONLY | O_DIRECTORY); }

void rename_durably(const std::string& from, const std::string& to) {
    if (::rename(from.c_str(), to.c_str()) != 0)
        throw Error(fmt::format("{}: rename from {} failed: {}", to, from, std::strerror(errno)));
    fsync_directory(parent_or_dot(to));
}

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
    rename_durably(tmp, path);
}

std::string sha256_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
        ::close(fd);
        throw Error("EVP_DigestInit_ex(sha256) failed");
    }
    std::vector<char> buf(1 << 20);
    while (true) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0) {
            int err = errno;
            ::close(fd);
            throw Error(fmt::format("{}: read failed: {}", path, std::strerror(err)));
        }
        if (n == 0) break;
        if (EVP_DigestUpdate(ctx.get(), buf.data(), size_t(n)) != 1) {
            ::close(fd);
            throw Error("EVP_DigestUpdate failed");
        }
    }
    ::close(fd);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) throw Error("EVP_DigestFinal_ex failed");
    std::string hex;
    for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
    return hex;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    std::ostringstream s;
    s << in.rdbuf();
    if (in.bad()) throw Error(fmt::format("{}: read failed", path));
    return s.str();
}

}  // namespace moe
