#include "parallel/device.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>

#include "common/error.h"

#ifdef MOE_WITH_CUDA
#include <ATen/Context.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace moe {

namespace {

// Why CUDA is unavailable, for select_device's message (empty when it is available).
std::string g_cuda_missing = "this moe-train was built without CUDA (configure with -DMOE_WITH_CUDA=ON, or the "
                             "`cuda` CMake preset)";
int g_cuda_devices = 0;

#ifdef MOE_WITH_CUDA
// The folder of the libtorch_cpu.so this process linked: libtorch_cuda.so of the same wheel sits
// beside it (and its own RPATH finds the nvidia-* libraries of that wheel).
std::string torch_lib_dir() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&at::globalContext), &info) == 0 || !info.dli_fname) return "";
    return std::filesystem::path(info.dli_fname).parent_path().string();
}

void load_cuda_backend() {
    int count = 0;
    const cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
        g_cuda_missing = rc != cudaSuccess ? fmt::format("no CUDA device is visible (cudaGetDeviceCount: {})",
                                                         cudaGetErrorString(rc))
                                           : "no CUDA device is visible (cudaGetDeviceCount: 0 devices)";
        (void)cudaGetLastError();   // clear the sticky error state of the runtime
        return;
    }
    // Registers libtorch's CUDA kernels and hooks (static initialisers of the library).
    const std::string dir = torch_lib_dir();
    std::string tried;
    for (const std::string& name : {dir.empty() ? std::string() : dir + "/libtorch_cuda.so", std::string("libtorch_cuda.so")}) {
        if (name.empty()) continue;
        if (dlopen(name.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
            g_cuda_devices = count;
            g_cuda_missing.clear();
            return;
        }
        const char* why = dlerror();
        tried += fmt::format("{}{}: {}", tried.empty() ? "" : "; ", name, why ? why : "unknown error");
    }
    g_cuda_missing = fmt::format("{} CUDA device(s) visible, but libtorch's CUDA backend could not be loaded ({})",
                                 count, tried);
}
#endif

}  // namespace

bool built_with_cuda() {
#ifdef MOE_WITH_CUDA
    return true;
#else
    return false;
#endif
}

int init_cuda_backend() {
#ifdef MOE_WITH_CUDA
    static std::once_flag once;
    std::call_once(once, load_cuda_backend);
#endif
    return g_cuda_devices;
}

int64_t local_rank() {
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"}) {
        const char* v = std::getenv(name);
        if (!v || !*v) continue;
        char* end = nullptr;
        const long r = std::strtol(v, &end, 10);
        if (*end == '\0' && r >= 0) return r;
    }
    return 0;
}

c10::Device select_device(DeviceKind request, const std::string& key) {
    if (request == DeviceKind::cpu) return c10::Device(c10::kCPU);
    const int count = init_cuda_backend();
    if (count == 0) {
        if (request == DeviceKind::auto_detect) return c10::Device(c10::kCPU);
        throw ConfigError(fmt::format("{}: cuda, but {}", key, g_cuda_missing));
    }
    const auto index = static_cast<c10::DeviceIndex>(local_rank() % count);
#ifdef MOE_WITH_CUDA
    c10::cuda::set_device(index);
#endif
    return c10::Device(c10::kCUDA, index);
}

std::string describe_device(const c10::Device& device) {
    if (!device.is_cuda()) return "cpu";
#ifdef MOE_WITH_CUDA
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, device.index()) == cudaSuccess)
        return fmt::format("cuda:{} ({}, {:.1f} GiB, sm_{}{})", device.index(), p.name,
                           double(p.totalGlobalMem) / (1 << 30), p.major, p.minor);
#endif
    return device.str();
}

double peak_bf16_flops(const c10::Device& device) {
    if (!device.is_cuda()) return 0;
#ifdef MOE_WITH_CUDA
    int major = 0, minor = 0, sms = 0, khz = 0;
    const int d = device.index();
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, d) != cudaSuccess ||
        cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, d) != cudaSuccess)
        return 0;
    // Dense bf16 tensor-core FLOP per SM per clock (NVIDIA's datasheets: A100 312 TFLOP/s =
    // 108 SMs x 1.41 GHz x 2048; H100 SXM 989 = 132 x 1.83 x 4096; L40S 362 ~ 142 x 2.52 x 1024).
    double per_sm = 0;
    if (major == 8 && minor == 0) per_sm = 2048;
    else if (major == 8) per_sm = 1024;
    else if (major == 9) per_sm = 4096;
    else if (major >= 10) per_sm = 8192;
    return per_sm * sms * khz * 1e3;
#else
    return 0;
#endif
}

}  // namespace moe
