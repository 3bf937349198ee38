// Configuration of the training data (section `data:`). Owned by lib/data.
#pragma once

#include <cstdint>
#include <string>

namespace moe {

enum class DataFormat { synthetic, text, bin };  // (the class DataSource is in data_source.h)

struct SyntheticDataConfig {
    int64_t vocab = 64;        // tokens 0..vocab-1
    int64_t num_sources = 8;   // Markov sources; each document is drawn from one
    int64_t branching = 4;     // successors with non-zero probability per state
    double concentration = 1.0;  // Dirichlet concentration of each row over its successors
    uint64_t seed = 1234;      // fixes the sources themselves
};

struct DataConfig {
    DataFormat source = DataFormat::synthetic;
    std::string path;          // text file, or .bin shard / directory / glob of shards
    std::string eval_path;     // optional separate held-out file(s); else eval_fraction of path
    double eval_fraction = 0.05;
    SyntheticDataConfig synthetic;
};

}  // namespace moe
