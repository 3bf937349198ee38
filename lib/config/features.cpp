#include "config/features.h"

#include <functional>
#include <string>
#include <vector>

#include "common/error.h"

namespace moe {

void reject_unavailable_features(const Config& cfg) {
    struct Pending {
        const char* key;
        std::function<bool(const Config&)> enabled;
        const char* what;
    };
    static const std::vector<Pending> pending = {
        {"async.enabled", [](const Config& c) { return c.async.enabled; }, "time-dilated asynchronous SGD"},
    };
    for (const auto& p : pending)
        if (p.enabled(cfg))
            throw ConfigError(fmt::format("{}: {} is not available yet in this build ({})", p.key, p.what,
                                          cfg.source_path.empty() ? "config" : cfg.source_path));
}

}  // namespace moe
