#include "train/run_record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "common/error.h"
#include "train/file_io.h"

namespace moe {

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
