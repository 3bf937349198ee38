#include "train/compute_threads.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "common/error.h"

namespace moe {

void set_compute_threads(int64_t threads) {
    at::set_num_threads(int(threads));
    // Checked: a libtorch built with another threading backend could ignore the request silently.
    if (at::get_num_threads() != threads) {
        throw Error(fmt::format("libtorch runs {} intra-op threads after asking for {}", at::get_num_threads(), threads));
    }
}

}  // namespace moe
