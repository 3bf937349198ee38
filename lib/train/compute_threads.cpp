#include "train/compute_threads.h"

#include <dlfcn.h>
#include <torch/torch.h>

namespace moe {

void set_compute_threads(int64_t threads) {
    at::set_num_threads(int(threads));
    // Looked up at run time: the binary must not depend on which BLAS libtorch was built against.
    using SetThreads = void (*)(int);
    if (auto set = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(int(threads));
}

}  // namespace moe
