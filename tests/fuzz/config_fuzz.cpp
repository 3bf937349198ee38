// Fuzz target: the YAML config with --set overrides (bytes from a file or the command line).
// The input is a YAML document, optionally followed by a line "#--set" and one override per
// line. Any outcome but a Config or a ConfigError is a finding: another exception type escaping
// (yaml-cpp's own, std::out_of_range, ...), a crash, or a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "common/error.h"
#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string input(reinterpret_cast<const char*>(data), size);
    const size_t mark = input.find("\n#--set\n");
    const std::string yaml = input.substr(0, mark);
    std::vector<std::string> overrides;
    if (mark != std::string::npos)
        for (size_t at = mark + 8, nl; at < input.size(); at = nl + 1) {
            nl = input.find('\n', at);
            if (nl == std::string::npos) nl = input.size();
            overrides.push_back(input.substr(at, nl - at));
        }
    try {
        moe::Config cfg = moe::parse_config(yaml, "fuzz.yaml", overrides);
        // What was accepted round-trips: the resolved config parses to itself.
        const std::string once = moe::config_to_yaml(cfg);
        if (moe::config_to_yaml(moe::parse_config(once, "roundtrip")) != once) {
            std::fprintf(stderr, "config_to_yaml does not round-trip:\n%s\n", once.c_str());
            std::abort();
        }
    } catch (const moe::ConfigError&) {
        // the expected answer to bad input
    } catch (const std::exception& e) {
        std::fprintf(stderr, "escaped exception (not a ConfigError): %s\n", e.what());
        std::abort();
    }
    return 0;
}
