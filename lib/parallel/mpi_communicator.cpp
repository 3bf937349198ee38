#include <exception>
#include "parallel/mpi_communicator.h"

#include <mpi.h>

#include <cstdlib>

#include "common/error.h"

namespace moe {

namespace {

MPI_Datatype mpi_type(const torch::Tensor& t, const std::string& where) {
    switch (t.scalar_type()) {
        case torch::kFloat32: return MPI_FLOAT;
        case torch::kFloat64: return MPI_DOUBLE;
        case torch::kInt64: return MPI_INT64_T;
        case torch::kInt32: return MPI_INT32_T;
        case torch::kUInt8: return MPI_UINT8_T;
        default: throw CommError(fmt::format("{}: no MPI type for tensor dtype {}", where, c10::toString(t.scalar_type())));
    }
}

MPI_Op mpi_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::sum: return MPI_SUM;
        case ReduceOp::max: return MPI_MAX;
        case ReduceOp::min: return MPI_MIN;
    }
    return MPI_SUM;
}

std::string mpi_error_string(int rc) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", rc);
    return std::string(text, size_t(len));
}

class MpiCommunicator;

class MpiRequest final : public CommRequest {
   public:
    MpiRequest(MPI_Request r, std::string where) : request_(r), where_(std::move(where)) {}
    ~MpiRequest() override {
        // Never leave a request dangling, except while an error unwinds the stack: its peers may
        // be blocked elsewhere waiting for this rank, and the job is about to be aborted anyway.
        if (request_ != MPI_REQUEST_NULL && std::uncaught_exceptions() == 0) MPI_Wait(&request_, MPI_STATUS_IGNORE);
    }
    void wait() override {
        int rc = MPI_Wait(&request_, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) throw CommError(fmt::format("MPI_Wait failed for {}: {}", where_, mpi_error_string(rc)));
    }
    bool test() override {
        int done = 0;
        int rc = MPI_Test(&request_, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) throw CommError(fmt::format("MPI_Test failed for {}: {}", where_, mpi_error_string(rc)));
        return done != 0;
    }

   private:
    MPI_Request request_;
    std::string where_;
};

class MpiCommunicator final : public Communicator {
   public:
    MpiCommunicator(MPI_Comm comm, std::string name, bool owned) : comm_(comm), name_(std::move(name)), owned_(owned) {
        check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
        check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    }
    ~MpiCommunicator() override {
        if (owned_) MPI_Comm_free(&comm_);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    const std::string& name() const override { return name_; }

    void all_reduce(torch::Tensor& t, ReduceOp op) override {
        require_contiguous(t, "MPI_Allreduce");
        check(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), count(t), mpi_type(t, where("MPI_Allreduce")), mpi_op(op), comm_),
              "MPI_Allreduce");
    }

    std::unique_ptr<CommRequest> all_reduce_async(torch::Tensor& t, ReduceOp op) override {
        require_contiguous(t, "MPI_Iallreduce");
        MPI_Request r = MPI_REQUEST_NULL;
        check(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), count(t), mpi_type(t, where("MPI_Iallreduce")), mpi_op(op),
                             comm_, &r),
              "MPI_Iallreduce");
        return std::make_unique<MpiRequest>(r, where("MPI_Iallreduce"));
    }

    void all_to_all(const torch::Tensor& send, const std::vector<int64_t>& send_counts, torch::Tensor& recv,
                    const std::vector<int64_t>& recv_counts) override {
        require_contiguous(send, "MPI_Alltoallv");
        require_contiguous(recv, "MPI_Alltoallv");
        MOE_CHECK(int(send_counts.size()) == size_ && int(recv_counts.size()) == size_,
                  "{}: all_to_all needs {} send and receive counts", where("MPI_Alltoallv"), size_);
        const int64_t row = send.dim() > 0 && send.size(0) > 0 ? send.numel() / send.size(0) : row_size(recv);
        const auto n = static_cast<size_t>(size_);
        std::vector<int> sc(n), sd(n), rc(n), rd(n);
        int64_t so = 0, ro = 0;
        for (int r = 0; r < size_; ++r) {
            sc[size_t(r)] = checked_int(send_counts[size_t(r)] * row);
            sd[size_t(r)] = checked_int(so);
            rc[size_t(r)] = checked_int(recv_counts[size_t(r)] * row);
            rd[size_t(r)] = checked_int(ro);
            so += send_counts[size_t(r)] * row;
            ro += recv_counts[size_t(r)] * row;
        }
        MOE_CHECK(so <= send.numel() && ro <= recv.numel(), "{}: counts exceed the tensors ({} > {} or {} > {})",
                  where("MPI_Alltoallv"), so, send.numel(), ro, recv.numel());
        MPI_Datatype type = mpi_type(send, where("MPI_Alltoallv"));
        check(MPI_Alltoallv(send.data_ptr(), sc.data(), sd.data(), type, recv.data_ptr(), rc.data(), rd.data(), type, comm_),
              "MPI_Alltoallv");
    }

    void send(const torch::Tensor& t, int dst, int tag) override {
        require_contiguous(t, "MPI_Send");
        check(MPI_Send(t.data_ptr(), count(t), mpi_type(t, where("MPI_Send")), dst, tag, comm_), "MPI_Send");
    }
    std::unique_ptr<CommRequest> send_async(const torch::Tensor& t, int dst, int tag) override {
        require_contiguous(t, "MPI_Isend");
        MPI_Request r = MPI_REQUEST_NULL;
        check(MPI_Isend(t.data_ptr(), count(t), mpi_type(t, where("MPI_Isend")), dst, tag, comm_, &r), "MPI_Isend");
        return std::make_unique<MpiRequest>(r, where("MPI_Isend"));
    }
    void recv(torch::Tensor& t, int src, int tag) override {
        require_contiguous(t, "MPI_Recv");
        check(MPI_Recv(t.data_ptr(), count(t), mpi_type(t, where("MPI_Recv")), src, tag, comm_, MPI_STATUS_IGNORE),
              "MPI_Recv");
    }
    void broadcast(torch::Tensor& t, int root) override {
        require_contiguous(t, "MPI_Bcast");
        check(MPI_Bcast(t.data_ptr(), count(t), mpi_type(t, where("MPI_Bcast")), root, comm_), "MPI_Bcast");
    }
    torch::Tensor all_gather(const torch::Tensor& t) override {
        auto in = t.contiguous();
        std::vector<int64_t> shape{size_};
        for (auto d : in.sizes()) shape.push_back(d);
        auto out = torch::empty(shape, in.options());
        MPI_Datatype type = mpi_type(in, where("MPI_Allgather"));
        check(MPI_Allgather(in.data_ptr(), count(in), type, out.data_ptr(), count(in), type, comm_), "MPI_Allgather");
        return out;
    }
    void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }
    std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
        MPI_Comm sub = MPI_COMM_NULL;
        check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
        return std::make_unique<MpiCommunicator>(sub, name, true);
    }

   private:
    std::string where(const char* call) const { return fmt::format("{} on rank {} of group '{}'", call, rank_, name_); }
    void check(int rc, const char* call) const {
        if (rc != MPI_SUCCESS) throw CommError(fmt::format("{} failed: {}", where(call), mpi_error_string(rc)));
    }
    void require_contiguous(const torch::Tensor& t, const char* call) const {
        if (!t.is_contiguous() || t.device().type() != torch::kCPU)
            throw CommError(fmt::format("{}: needs a contiguous CPU tensor", where(call)));
    }
    int count(const torch::Tensor& t) const { return checked_int(t.numel()); }
    int checked_int(int64_t n) const {
        if (n > int64_t(std::numeric_limits<int>::max()))
            throw CommError(fmt::format("group '{}': {} elements exceed MPI's int count", name_, n));
        return int(n);
    }
    static int64_t row_size(const torch::Tensor& t) {
        int64_t row = 1;
        for (int64_t d = 1; d < t.dim(); ++d) row *= t.size(d);
        return row;
    }

    MPI_Comm comm_;
    std::string name_;
    bool owned_;
    int rank_ = 0, size_ = 1;
};

void finalize_mpi() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

}  // namespace

std::string mpi_library_version() {
    char text[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
    int len = 0;
    if (MPI_Get_library_version(text, &len) != MPI_SUCCESS) return "";
    std::string s(text, static_cast<size_t>(len));
    return s.substr(0, s.find_first_of(",\n"));
}

namespace {
bool g_thread_multiple = false;
}

bool mpi_thread_multiple() { return g_thread_multiple; }

bool launched_by_mpi() {
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"})
        if (std::getenv(var)) return true;
    return false;
}

std::unique_ptr<Communicator> make_mpi_world() {
    int initialized = 0;
    if (MPI_Initialized(&initialized) != MPI_SUCCESS) throw CommError("MPI_Initialized failed");
    if (!initialized) {
        int provided = 0;
        // Asynchronous multi-rank checkpoint saves commit from a thread of their own, on
        // communicators of their own, while the main thread trains: that needs THREAD_MULTIPLE.
        if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
            throw CommError("MPI_Init_thread failed");
        g_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
        std::atexit(finalize_mpi);
    }
    return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", false);
}

void abort_mpi_job(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);   // MPI_Abort does not return; if it did, still end this rank
}

}  // namespace moe
