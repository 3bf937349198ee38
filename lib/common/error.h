// Typed errors with context. Every failure the user can cause (config, data, checkpoint,
// communication) throws one of these; main() catches, prints "[rank r] <message>", and exits
// non-zero (aborting the MPI job so no peer waits in a collective).
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join for shapes in messages

#include <stdexcept>
#include <string>

namespace moe {

class Error : public std::runtime_error {
   public:
    using std::runtime_error::runtime_error;
};

// Bad configuration: message names the key path, the value and file:line.
class ConfigError : public Error {
   public:
    using Error::Error;
};

// Missing, empty, truncated or malformed data files.
class DataError : public Error {
   public:
    using Error::Error;
};

// MPI / NCCL failures: message names the call, the rank and the group.
class CommError : public Error {
   public:
    using Error::Error;
};

// Checkpoint write/read/verify failures: message names the file.
class CheckpointError : public Error {
   public:
    using Error::Error;
};

}  // namespace moe

// Always-on invariant check with a formatted message; throws moe::Error (or the given type).
#define MOE_CHECK(cond, ...)                                                                   \
    do {                                                                                       \
        if (!(cond)) throw ::moe::Error(fmt::format("{}:{}: ", __FILE__, __LINE__) +          \
                                        fmt::format(__VA_ARGS__));                             \
    } while (0)
