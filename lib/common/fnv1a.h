// FNV-1a, 64 bit: a cheap, stable digest of bytes (parameter seeds, config hashes, host groups,
// the record's anchor digests). Not a security hash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moe {

constexpr uint64_t kFnv1aPrime = 1099511628211ull;
// FNV-1a's offset basis.
constexpr uint64_t kFnv1aOffset = 14695981039346656037ull;
// The basis the first versions used (the standard one missing its last digit). Parameter seeds
// (MoeTransformer's per-tensor init) and model_config_hash, which checkpoints store and compare
// on resume, derive from it, so it stays: changing it would change every initialisation and make
// every existing checkpoint "another model".
constexpr uint64_t kFnv1aLegacyOffset = 1469598103934665603ull;

// Continues digest h over n bytes at data.
inline uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnv1aPrime;
    return h;
}

inline uint64_t fnv1a(std::string_view s, uint64_t basis = kFnv1aOffset) { return fnv1a(basis, s.data(), s.size()); }

}  // namespace moe
