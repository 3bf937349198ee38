#include "common/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
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

void write_file_durably(const std::string& path, const void* data, size_t size) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
    auto fail = [&](const char* what, int err) {
        ::close(fd);
        ::unlink(path.c_str());
        throw Error(fmt::format("{}: {} failed: {}", path, what, std::strerror(err)));
    };
    const char* p = static_cast<const char*>(data);
    for (size_t done = 0; done < size;) {
        ssize_t n = ::write(fd, p + done, std::min<size_t>(size - done, size_t(1) << 30));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail("write", n < 0 ? errno : ENOSPC);
        done += size_t(n);
    }
    if (::fsync(fd) != 0) fail("fsync", errno);
    if (::close(fd) != 0) {
        int err = errno;
        ::unlink(path.c_str());
        throw Error(fmt::format("{}: close failed: {}", path, std::strerror(err)));
    }
}

void write_regions_durably(const std::string& path, const std::vector<FileRegion>& regions) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw Error(fmt::format("{}: cannot open for writing: {}", path, std::strerror(errno)));
    auto fail = [&](const char* what, int err) {
        ::close(fd);
        throw Error(fmt::format("{}: {} failed: {}", path, what, std::strerror(err)));
    };
    struct stat st{};
    if (::fstat(fd, &st) != 0) fail("fstat", errno);
    // Filesystems without fallocate (EOPNOTSUPP) still get every write checked below.
    if (int rc = ::posix_fallocate(fd, 0, st.st_size); rc != 0 && rc != EOPNOTSUPP && rc != EINVAL)
        fail("posix_fallocate", rc);
    for (const auto& r : regions) {
        const char* p = static_cast<const char*>(r.data);
        for (size_t done = 0; done < r.size;) {
            ssize_t n = ::pwrite(fd, p + done, std::min<size_t>(r.size - done, size_t(1) << 30), off_t(r.offset + int64_t(done)));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail("pwrite", n < 0 ? errno : ENOSPC);
            done += size_t(n);
        }
    }
    if (::fsync(fd) != 0) fail("fsync", errno);
    if (::close(fd) != 0) throw Error(fmt::format("{}: close failed: {}", path, std::strerror(errno)));
}

void write_file_atomically(const std::string& path, const std::string& content) {
    const std::string tmp = path + ".tmp";
    write_file_durably(tmp, content.data(), content.size());
    rename_durably(tmp, path);
}

namespace {

// Incremental SHA-256 over OpenSSL's EVP interface; every call checked.
class Sha256 {
   public:
    Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
        if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
            throw Error("EVP_DigestInit_ex(sha256) failed");
    }
    void update(const void* data, size_t size) {
        if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) throw Error("EVP_DigestUpdate(sha256) failed");
    }
    std::string hex() {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1) throw Error("EVP_DigestFinal_ex(sha256) failed");
        std::string out;
        for (unsigned i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
        return out;
    }

   private:
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

}  // namespace

std::string sha256_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    try {
        Sha256 sha;
        std::vector<char> buf(1 << 20);
        for (ssize_t n; (n = ::read(fd, buf.data(), buf.size())) != 0;) {
            if (n < 0) throw Error(fmt::format("{}: read failed: {}", path, std::strerror(errno)));
            sha.update(buf.data(), size_t(n));
        }
        ::close(fd);
        return sha.hex();
    } catch (...) {
        ::close(fd);
        throw;
    }
}

std::string sha256_file_as_written(const std::string& path, std::vector<FileRegion> regions) {
    std::sort(regions.begin(), regions.end(), [](const FileRegion& a, const FileRegion& b) { return a.offset < b.offset; });
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    try {
        struct stat st{};
        if (::fstat(fd, &st) != 0) throw Error(fmt::format("{}: fstat failed: {}", path, std::strerror(errno)));
        Sha256 sha;
        std::vector<char> buf;
        auto hash_file_range = [&](int64_t from, int64_t to) {   // the bytes HDF5 wrote itself
            buf.resize(size_t(to - from));
            for (size_t done = 0; done < buf.size();) {
                ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, off_t(from + int64_t(done)));
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) throw Error(fmt::format("{}: read failed at {}: {}", path, from, n < 0 ? std::strerror(errno) : "end of file"));
                done += size_t(n);
            }
            sha.update(buf.data(), buf.size());
        };
        int64_t at = 0;
        for (const auto& r : regions) {
            if (r.offset < at) throw Error(fmt::format("{}: overlapping regions at offset {}", path, r.offset));
            hash_file_range(at, r.offset);
            sha.update(r.data, r.size);
            at = r.offset + int64_t(r.size);
        }
        hash_file_range(at, std::max<int64_t>(at, st.st_size));
        ::close(fd);
        return sha.hex();
    } catch (...) {
        ::close(fd);
        throw;
    }
}

std::string sha256_bytes(const void* data, size_t size) {
    Sha256 sha;
    sha.update(data, size);
    return sha.hex();
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
