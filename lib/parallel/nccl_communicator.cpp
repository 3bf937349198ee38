#include "parallel/nccl_communicator.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/error.h"

#ifdef MOE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace moe {

#ifndef MOE_WITH_CUDA

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, const torch::Device&) {
    throw CommError(fmt::format("group '{}': NCCL needs a CUDA build of moe-train (-DMOE_WITH_CUDA=ON)", host->name()));
}

std::string nccl_library_version() { return ""; }

#else

namespace {

double nccl_timeout_seconds() {
    const char* v = std::getenv("MOE_NCCL_TIMEOUT_S");
    if (!v || !*v) return 600;
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    if (*end != '\0' || !(s > 0)) throw ConfigError(fmt::format("MOE_NCCL_TIMEOUT_S={}: not a positive number of seconds", v));
    return s;
}

ncclDataType_t nccl_type(const torch::Tensor& t, const std::string& where) {
    switch (t.scalar_type()) {
        case torch::kFloat32: return ncclFloat32;
        case torch::kFloat64: return ncclFloat64;
        case torch::kBFloat16: return ncclBfloat16;
        case torch::kFloat16: return ncclFloat16;
        case torch::kInt64: return ncclInt64;
        case torch::kInt32: return ncclInt32;
        case torch::kUInt8: return ncclUint8;
        default: throw CommError(fmt::format("{}: no NCCL type for tensor dtype {}", where, c10::toString(t.scalar_type())));
    }
}

ncclRedOp_t nccl_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::sum: return ncclSum;
        case ReduceOp::max: return ncclMax;
        case ReduceOp::min: return ncclMin;
    }
    return ncclSum;
}

// The state a communicator and its requests share: the NCCL handle and whether it has failed.
struct NcclHandle {
    ncclComm_t comm = nullptr;
    bool failed = false;
    std::string name;
    int rank = 0;

    std::string where(const char* call) const { return fmt::format("{} on rank {} of group '{}'", call, rank, name); }
    [[noreturn]] void fail(const std::string& what) {
        if (!failed && comm) ncclCommAbort(comm);   // unblocks this rank's kernels of this communicator
        failed = true;
        throw CommError(what);
    }
    void check(ncclResult_t rc, const char* call) {
        if (rc == ncclSuccess || rc == ncclInProgress) return;
        const char* last = comm ? ncclGetLastError(comm) : nullptr;
        fail(fmt::format("{} failed: {}{}{}", where(call), ncclGetErrorString(rc), last && *last ? ": " : "",
                         last ? last : ""));
    }
    void check_cuda(cudaError_t rc, const char* call) {
        if (rc != cudaSuccess) fail(fmt::format("{} failed: {}", where(call), cudaGetErrorString(rc)));
    }
};

class NcclRequest final : public CommRequest {
   public:
    NcclRequest(std::shared_ptr<NcclHandle> h, cudaEvent_t done, std::string what)
        : h_(std::move(h)), done_(done), what_(std::move(what)) {}
    ~NcclRequest() override {
        if (!finished_ && std::uncaught_exceptions() == 0 && !h_->failed) {
            try {
                wait();
            } catch (const std::exception&) {  // a destructor must not throw; the failure aborted the communicator
            }
        }
        cudaEventDestroy(done_);
    }
    void wait() override {
        if (finished_) return;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(nccl_timeout_seconds());
        while (!poll()) {
            if (std::chrono::steady_clock::now() > deadline)
                h_->fail(fmt::format("{}: {} did not complete within MOE_NCCL_TIMEOUT_S = {} s (a peer failed or "
                                     "stopped); communicator aborted",
                                     h_->where("NCCL"), what_, nccl_timeout_seconds()));
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        complete();
    }
    bool test() override {
        if (finished_) return true;
        if (!poll()) return false;
        complete();
        return true;
    }

   private:
    bool poll() {
        const cudaError_t rc = cudaEventQuery(done_);
        if (rc == cudaSuccess) return true;
        if (rc != cudaErrorNotReady) h_->check_cuda(rc, "cudaEventQuery");
        ncclResult_t async = ncclSuccess;
        h_->check(ncclCommGetAsyncError(h_->comm, &async), "ncclCommGetAsyncError");
        if (async != ncclSuccess && async != ncclInProgress)
            h_->fail(fmt::format("{}: {} failed: {}", h_->where("NCCL"), what_, ncclGetErrorString(async)));
        return false;
    }
    void complete() {
        finished_ = true;
        // Later work on the compute stream sees the result.
        h_->check_cuda(cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream().stream(), done_, 0), "cudaStreamWaitEvent");
    }

    std::shared_ptr<NcclHandle> h_;
    cudaEvent_t done_;
    std::string what_;
    bool finished_ = false;
};

class NcclCommunicator final : public Communicator {
   public:
    NcclCommunicator(std::unique_ptr<Communicator> host, const torch::Device& device)
        : host_(std::move(host)), device_(device), h_(std::make_shared<NcclHandle>()),
          stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())) {
        h_->name = host_->name();
        h_->rank = host_->rank();
        c10::cuda::CUDAGuard guard(device_);
        ncclUniqueId id;
        std::memset(&id, 0, sizeof id);
        if (host_->rank() == 0) h_->check(ncclGetUniqueId(&id), "ncclGetUniqueId");
        auto bytes = torch::empty({int64_t(sizeof id)}, torch::kUInt8);
        std::memcpy(bytes.data_ptr<uint8_t>(), &id, sizeof id);
        host_->broadcast(bytes, 0);
        std::memcpy(&id, bytes.data_ptr<uint8_t>(), sizeof id);
        h_->check(ncclCommInitRank(&h_->comm, host_->size(), id, host_->rank()), "ncclCommInitRank");
    }
    ~NcclCommunicator() override {
        if (!h_->comm) return;
        if (h_->failed) return;                       // already aborted
        if (std::uncaught_exceptions() > 0) ncclCommAbort(h_->comm);   // peers may never arrive
        else ncclCommDestroy(h_->comm);
    }

    int rank() const override { return host_->rank(); }
    int size() const override { return host_->size(); }
    const std::string& name() const override { return host_->name(); }

    void all_reduce(torch::Tensor& t, ReduceOp op) override {
        if (!t.is_cuda()) return host_->all_reduce(t, op);
        all_reduce_async(t, op)->wait();
    }
    std::unique_ptr<CommRequest> all_reduce_async(torch::Tensor& t, ReduceOp op) override {
        if (!t.is_cuda()) return host_->all_reduce_async(t, op);
        require(t, "ncclAllReduce");
        return enqueue("ncclAllReduce", {t}, [&](cudaStream_t s) {
            h_->check(ncclAllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), nccl_type(t, h_->where("ncclAllReduce")),
                                    nccl_op(op), h_->comm, s),
                      "ncclAllReduce");
        });
    }
    void all_to_all(const torch::Tensor& send, const std::vector<int64_t>& send_counts, torch::Tensor& recv,
                    const std::vector<int64_t>& recv_counts) override {
        if (!send.is_cuda() && !recv.is_cuda()) return host_->all_to_all(send, send_counts, recv, recv_counts);
        require(send, "ncclSend");
        require(recv, "ncclRecv");
        MOE_CHECK(int(send_counts.size()) == size() && int(recv_counts.size()) == size(),
                  "{}: all_to_all needs {} send and receive counts", h_->where("all_to_all"), size());
        int64_t row = 1;
        for (int64_t d = 1; d < recv.dim(); ++d) row *= recv.size(d);
        const auto type = nccl_type(send, h_->where("ncclSend"));
        const size_t elem = send.element_size();
        int64_t so = 0, ro = 0;
        for (int r = 0; r < size(); ++r) so += send_counts[size_t(r)], ro += recv_counts[size_t(r)];
        MOE_CHECK(so * row <= send.numel() && ro * row <= recv.numel(), "{}: counts exceed the tensors",
                  h_->where("all_to_all"));
        enqueue("all_to_all (ncclSend/ncclRecv)", {send, recv}, [&](cudaStream_t s) {
            // One group: NCCL matches every peer's sends and receives together, in any order.
            h_->check(ncclGroupStart(), "ncclGroupStart");
            auto* sp = static_cast<char*>(send.data_ptr());
            auto* rp = static_cast<char*>(recv.data_ptr());
            for (int r = 0; r < size(); ++r) {
                const int64_t sn = send_counts[size_t(r)] * row, rn = recv_counts[size_t(r)] * row;
                if (sn > 0) h_->check(ncclSend(sp, size_t(sn), type, r, h_->comm, s), "ncclSend");
                if (rn > 0) h_->check(ncclRecv(rp, size_t(rn), type, r, h_->comm, s), "ncclRecv");
                sp += sn * elem;
                rp += rn * elem;
            }
            h_->check(ncclGroupEnd(), "ncclGroupEnd");
        })->wait();
    }
    void send(const torch::Tensor& t, int dst, int tag) override { host_->send(t.is_cuda() ? t.cpu() : t, dst, tag); }
    std::unique_ptr<CommRequest> send_async(const torch::Tensor& t, int dst, int tag) override {
        if (!t.is_cuda()) return host_->send_async(t, dst, tag);
        // The staging copy lives in the request until the send completes.
        struct Staged final : CommRequest {
            torch::Tensor copy;
            std::unique_ptr<CommRequest> inner;
            void wait() override { inner->wait(); }
            bool test() override { return inner->test(); }
        };
        auto r = std::make_unique<Staged>();
        r->copy = t.cpu();
        r->inner = host_->send_async(r->copy, dst, tag);
        return r;
    }
    void recv(torch::Tensor& t, int src, int tag) override {
        if (!t.is_cuda()) return host_->recv(t, src, tag);
        auto staged = torch::empty(t.sizes(), t.options().device(torch::kCPU));
        host_->recv(staged, src, tag);
        t.copy_(staged);
    }
    void broadcast(torch::Tensor& t, int root) override {
        if (!t.is_cuda()) return host_->broadcast(t, root);
        require(t, "ncclBroadcast");
        enqueue("ncclBroadcast", {t}, [&](cudaStream_t s) {
            h_->check(ncclBroadcast(t.data_ptr(), t.data_ptr(), size_t(t.numel()), nccl_type(t, h_->where("ncclBroadcast")),
                                    root, h_->comm, s),
                      "ncclBroadcast");
        })->wait();
    }
    torch::Tensor all_gather(const torch::Tensor& t) override {
        if (!t.is_cuda()) return host_->all_gather(t);
        auto in = t.contiguous();
        std::vector<int64_t> shape{size()};
        for (auto d : in.sizes()) shape.push_back(d);
        auto out = torch::empty(shape, in.options());
        enqueue("ncclAllGather", {in, out}, [&](cudaStream_t s) {
            h_->check(ncclAllGather(in.data_ptr(), out.data_ptr(), size_t(in.numel()), nccl_type(in, h_->where("ncclAllGather")),
                                    h_->comm, s),
                      "ncclAllGather");
        })->wait();
        return out;
    }
    void barrier() override { host_->barrier(); }
    std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
        return std::make_unique<NcclCommunicator>(host_->split(color, key, name), device_);
    }

   private:
    void require(const torch::Tensor& t, const char* call) {
        if (!t.is_contiguous() || !t.is_cuda() || t.device() != device_)
            throw CommError(fmt::format("{}: needs a contiguous tensor on {}, got one on {}", h_->where(call),
                                        device_.str(), t.device().str()));
        if (h_->failed) throw CommError(fmt::format("{}: the communicator was aborted after an earlier failure", h_->where(call)));
    }

    // Runs `issue` on the NCCL stream after the compute stream's work so far; returns the request
    // whose wait() orders the compute stream after it.
    template <typename Issue>
    std::unique_ptr<CommRequest> enqueue(const char* what, std::initializer_list<torch::Tensor> tensors, Issue&& issue) {
        c10::cuda::CUDAGuard guard(device_);
        cudaStream_t compute = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
        cudaEvent_t ready = nullptr, done = nullptr;
        h_->check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        h_->check_cuda(cudaEventRecord(ready, compute), "cudaEventRecord");
        h_->check_cuda(cudaStreamWaitEvent(stream_.stream(), ready, 0), "cudaStreamWaitEvent");
        cudaEventDestroy(ready);   // released once recorded work completes
        for (const auto& t : tensors)
            if (t.numel() > 0) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), stream_);
        issue(stream_.stream());
        h_->check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        h_->check_cuda(cudaEventRecord(done, stream_.stream()), "cudaEventRecord");
        return std::make_unique<NcclRequest>(h_, done, what);
    }

    std::unique_ptr<Communicator> host_;
    torch::Device device_;
    std::shared_ptr<NcclHandle> h_;
    c10::cuda::CUDAStream stream_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, const torch::Device& device) {
    MOE_CHECK(device.is_cuda(), "make_nccl_communicator: group '{}' needs a CUDA device, got {}", host->name(), device.str());
    return std::make_unique<NcclCommunicator>(std::move(host), device);
}

std::string nccl_library_version() {
    int v = 0;
    if (ncclGetVersion(&v) != ncclSuccess) return "";
    return fmt::format("NCCL {}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
}

#endif

}  // namespace moe
