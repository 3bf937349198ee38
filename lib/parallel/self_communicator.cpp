// The one-process Communicator: every collective over a group of one is the identity.
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "parallel/communicator.h"

namespace moe {

namespace {

class DoneRequest final : public CommRequest {
   public:
    void wait() override {}
    bool test() override { return true; }
};

class SelfCommunicator final : public Communicator {
   public:
    explicit SelfCommunicator(std::string name) : name_(std::move(name)) {}
    int rank() const override { return 0; }
    int size() const override { return 1; }
    const std::string& name() const override { return name_; }
    void all_reduce(torch::Tensor&, ReduceOp) override {}
    std::unique_ptr<CommRequest> all_reduce_async(torch::Tensor&, ReduceOp) override {
        return std::make_unique<DoneRequest>();
    }
    void all_to_all(const torch::Tensor& send, const std::vector<int64_t>& send_counts, torch::Tensor& recv,
                    const std::vector<int64_t>& recv_counts) override {
        MOE_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0],
                  "{}: all_to_all of one rank needs equal send and receive counts", name_);
        recv.narrow(0, 0, recv_counts[0]).copy_(send.narrow(0, 0, send_counts[0]));
    }
    void send(const torch::Tensor&, int dst, int) override {
        throw CommError(fmt::format("{}: send to rank {} in a group of one", name_, dst));
    }
    std::unique_ptr<CommRequest> send_async(const torch::Tensor& t, int dst, int tag) override {
        send(t, dst, tag);   // throws: a group of one has no one to send to
        return nullptr;
    }
    void recv(torch::Tensor&, int src, int) override {
        throw CommError(fmt::format("{}: recv from rank {} in a group of one", name_, src));
    }
    void broadcast(torch::Tensor&, int) override {}
    torch::Tensor all_gather(const torch::Tensor& t) override { return t.unsqueeze(0).clone(); }
    void barrier() override {}
    std::unique_ptr<Communicator> split(int, int, const std::string& name) override {
        return std::make_unique<SelfCommunicator>(name);
    }

   private:
    std::string name_;
};

}  // namespace

std::string broadcast_string(Communicator& comm, const std::string& value, int root) {
    if (comm.size() == 1) return value;
    auto length = torch::tensor({int64_t(comm.rank() == root ? value.size() : 0)});
    comm.broadcast(length, root);
    auto bytes = torch::zeros({length.item<int64_t>()}, torch::kUInt8);
    if (comm.rank() == root && !value.empty()) std::memcpy(bytes.data_ptr<uint8_t>(), value.data(), value.size());
    if (bytes.numel() > 0) comm.broadcast(bytes, root);
    return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), size_t(bytes.numel()));
}

int64_t ranks_on_this_host() {
    for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
        if (const char* v = std::getenv(var)) {
            const long n = std::strtol(v, nullptr, 10);
            if (n > 0) return n;
        }
    return 1;
}

std::unique_ptr<Communicator> make_self_communicator(const std::string& name) {
    return std::make_unique<SelfCommunicator>(name);
}

}  // namespace moe
