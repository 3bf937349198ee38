// Fuzz target: the checkpoint reader. The input is the bytes of a shard (rank-00000.h5), loaded
// into a small fixed model with its optimizer and training state, as a resume would. Any outcome
// but a full load or a CheckpointError is a finding; a load that fails must leave the model as it
// was (the load is transactional).
//   MOE_FUZZ_WRITE_SEED=DIR checkpoint_fuzz   writes a valid shard of that model to DIR (the seed)
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "checkpoint/checkpoint.h"
#include "common/error.h"
#include "config/config.h"
#include "moe/transformer.h"
#include "optim/optimizer.h"

namespace {

struct Target {
    moe::Config cfg = moe::parse_config(
        "model: {vocab_size: 64, d_model: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, max_seq_len: 8}\n"
        "moe: {num_experts: 2, top_k: 1, ffn_hidden: 16}\ntrain: {seq_len: 8, batch_size: 2}\n",
        "fuzz-model");
    moe::MoeTransformer model{cfg.model, std::make_shared<moe::LocalDispatcher>(2), 1};
    moe::Optimizer optimizer{model.params(), cfg.optim};
    std::string dir = std::filesystem::temp_directory_path() / ("moe_checkpoint_fuzz_" + std::to_string(::getpid()));
};

Target& target() {
    static Target t;
    return t;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    Target& t = target();
    std::filesystem::create_directories(t.dir);
    if (const char* out = std::getenv("MOE_FUZZ_WRITE_SEED")) {
        moe::CheckpointStore store(out, 2, {"", "fuzz"});
        moe::TrainingState st;
        st.torch_rng = moe::torch_rng_state();
        store.save(moe::take_snapshot(t.model.params(), t.optimizer, st));
        std::exit(0);
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Target& t = target();
    const std::string shard = t.dir + "/" + moe::shard_file_name(0);
    std::ofstream(shard, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), std::streamsize(size));
    const torch::Tensor before = t.model.params().values(moe::ParamGroup::dense).clone();
    moe::TrainingState st;
    try {
        moe::load_checkpoint(t.dir, 0, t.model.params(), &t.optimizer, &st);
        if (st.step < 0 || st.tokens < 0 || st.skipped_steps < 0) {
            std::fprintf(stderr, "a load accepted a negative counter\n");
            std::abort();
        }
    } catch (const moe::CheckpointError&) {
        if (!torch::equal(before, t.model.params().values(moe::ParamGroup::dense))) {
            std::fprintf(stderr, "a failed load changed the model\n");
            std::abort();
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "escaped exception (not a CheckpointError): %s\n", e.what());
        std::abort();
    }
    return 0;
}
