// Wall-clock time as text, for run records, manifests and reports.
#pragma once

#include <ctime>
#include <string>

namespace moe {

// Local time as ISO 8601 with offset, e.g. 2026-11-23T10:04:05+0000.
inline std::string iso_time_now() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
    return buf;
}

}  // namespace moe
