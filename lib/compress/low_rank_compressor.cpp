#include "compress/low_rank_compressor.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/error.h"

namespace moe {

namespace {

using Clock = std::chrono::steady_clock;

// The router, the embedding and 1-D tensors stay exact: they are small, or (embedding rows)
// sparse, and the router's decisions are sensitive to its weights.
bool never_compressed(const ParamEntry& e) {
    const int64_t dims = e.value.dim() - (e.stacked() ? 1 : 0);
    return dims < 2 || e.name.find("embed_tokens") != std::string::npos ||
           e.name.find("block_sparse_moe.gate.") != std::string::npos;
}

// Flattened views in, one contiguous buffer out (and back).
torch::Tensor gather(const std::vector<torch::Tensor>& views) {
    std::vector<torch::Tensor> flat;
    flat.reserve(views.size());
    for (const auto& v : views) flat.push_back(v.reshape({-1}));
    return flat.empty() ? torch::zeros({0}, torch::kFloat32) : torch::cat(flat);   // (empty: never sent)
}

void scatter(const torch::Tensor& buffer, const std::vector<torch::Tensor>& views) {
    int64_t at = 0;
    for (const auto& v : views) {
        v.copy_(buffer.narrow(0, at, v.numel()).view(v.sizes()));
        at += v.numel();
    }
}

// Orthonormal columns spanning P's, per batch entry (reduced QR).
torch::Tensor orthonormalise(const torch::Tensor& P_BNR) { return std::get<0>(torch::linalg_qr(P_BNR, "reduced")); }

}  // namespace

LowRankCompressor::LowRankCompressor(const CompressConfig& cfg, ParameterStore& params, ParamGroup group,
                                     Communicator& comm, double divisor)
    : cfg_(cfg), params_(params), group_(group), comm_(comm), divisor_(divisor),
      group_name_(group == ParamGroup::dense ? "dense" : "expert") {
    MOE_CHECK(divisor > 0, "compress: divisor {} must be positive", divisor);
    torch::NoGradGuard no_grad;
    torch::Tensor& grads = params.grads(group);
    for (const auto& e : params.entries()) {
        if (e.group != group) continue;
        torch::Tensor g = grads.narrow(0, e.offset, e.value.numel()).view(e.value.sizes());
        if (never_compressed(e)) {
            flat_.push_back(g);
            flat_numel_ += g.numel();
            continue;
        }
        Matrix mx;
        mx.batch = e.stacked() ? e.value.size(0) : 1;
        mx.n = e.value.size(-2);
        mx.m = e.value.numel() / (mx.batch * mx.n);
        // The largest rank at which the factors are still min_ratio times smaller than M.
        const double budget = double(mx.n) * double(mx.m) / cfg.min_ratio;
        // (A matrix smaller than min_rank is compressed at its full rank, min(n, m), if that pays.)
        mx.cap = std::min({cfg.max_rank, std::min(mx.n, mx.m), int64_t(std::ceil(budget / double(mx.n + mx.m))) - 1});
        mx.floor = std::min(cfg.min_rank, std::min(mx.n, mx.m));
        if (mx.cap < mx.floor) {
            flat_.push_back(g);
            flat_numel_ += g.numel();
            continue;
        }
        mx.name = e.name;
        mx.grad_BNM = g.view({mx.batch, mx.n, mx.m});
        mx.error_BNM = torch::zeros({mx.batch, mx.n, mx.m}, grads.options());
        mx.rank = std::clamp(cfg.rank, mx.floor, mx.cap);
        mx.q_BMC = torch::zeros({mx.batch, mx.m, mx.cap}, grads.options());
        matrices_.push_back(std::move(mx));
    }
    for (size_t k = 0; k < matrices_.size(); ++k) {
        Matrix& mx = matrices_[k];
        mx.q_BMC.copy_(seeded_columns(k, -1, 0, mx.cap));
    }
    ranks_K_ = torch::zeros({int64_t(matrices_.size())}, torch::kFloat32);
    for (size_t k = 0; k < matrices_.size(); ++k) ranks_K_[int64_t(k)] = float(matrices_[k].rank);
}

torch::Tensor LowRankCompressor::seeded_columns(size_t k, int64_t step, int64_t first, int64_t count) const {
    const Matrix& mx = matrices_[k];
    // One stream per (seed, group, matrix, step, column): the same numbers on every rank.
    const uint64_t key = cfg_.seed * 0x9e3779b97f4a7c15ull ^ (uint64_t(group_) << 56) ^ (uint64_t(k) << 40) ^
                         (uint64_t(step + 1) << 8) ^ uint64_t(first);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(key);
    return torch::randn({mx.batch, mx.m, count}, gen, torch::kFloat32);
}

void LowRankCompressor::reduce(int64_t step) {
    torch::NoGradGuard no_grad;
    const auto t0 = Clock::now();
    stats_ = {};
    stats_.bytes_plain = params_.numel(group_) * int64_t(sizeof(float));
    if (comm_.size() == 1) {
        // Nothing to agree with: the mean over one replica group is the sum divided by dp.
        if (divisor_ != 1) params_.grads(group_).div_(divisor_);
    } else if (step < cfg_.start_step || matrices_.empty()) {
        reduce_plain();
    } else if (cfg_.refresh_every > 0 && (step - cfg_.start_step) % cfg_.refresh_every == 0) {
        refresh(step);
    } else {
        reduce_compressed(step);
    }
    stats_.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
}

void LowRankCompressor::reduce_plain() {
    torch::Tensor& grads = params_.grads(group_);
    comm_.all_reduce(grads);
    grads.div_(divisor_);
    stats_.bytes_sent = grads.numel() * int64_t(sizeof(float));
}

void LowRankCompressor::refresh(int64_t step) {
    // The exact mean of M = grad + E, and Q from its top-r right singular vectors.
    std::vector<torch::Tensor> views = flat_;
    for (auto& mx : matrices_) {
        mx.error_BNM.add_(mx.grad_BNM);   // E now holds this rank's M
        views.push_back(mx.error_BNM);
    }
    torch::Tensor buffer = gather(views);
    comm_.all_reduce(buffer);
    buffer.div_(divisor_);
    stats_.bytes_sent = buffer.numel() * int64_t(sizeof(float));
    int64_t at = 0;
    for (const auto& v : flat_) {
        v.copy_(buffer.narrow(0, at, v.numel()).view(v.sizes()));
        at += v.numel();
    }
    for (auto& mx : matrices_) {
        torch::Tensor mean_BNM = buffer.narrow(0, at, mx.error_BNM.numel()).view(mx.error_BNM.sizes());
        at += mx.error_BNM.numel();
        mx.grad_BNM.copy_(mean_BNM);
        mx.error_BNM.sub_(mean_BNM);   // E = M - M_hat, with M_hat the exact mean
        // Vh_BKM: rows are right singular vectors, largest first (identical input on every rank).
        torch::Tensor Vh = std::get<2>(torch::linalg_svd(mean_BNM, /*full_matrices=*/false));
        mx.q_BMC.narrow(2, 0, mx.rank).copy_(Vh.narrow(1, 0, mx.rank).transpose(1, 2));
    }
    stats_.compressed = stats_.refreshed = true;
    (void)step;
}

void LowRankCompressor::reduce_compressed(int64_t step) {
    // The uncompressed part first, without waiting: it travels while P and Q are computed.
    torch::Tensor flat = gather(flat_);
    std::unique_ptr<CommRequest> flat_request;
    if (flat.numel() > 0) flat_request = comm_.all_reduce_async(flat);

    // P = M Q for every matrix, in one all-reduce.
    std::vector<torch::Tensor> Ms, Ps;
    for (auto& mx : matrices_) {
        mx.error_BNM.add_(mx.grad_BNM);   // E now holds this rank's M
        Ms.push_back(mx.error_BNM);
        Ps.push_back(torch::bmm(mx.error_BNM, mx.q_BMC.narrow(2, 0, mx.rank)));
    }
    torch::Tensor p_buffer = gather(Ps);
    comm_.all_reduce(p_buffer);
    scatter(p_buffer, Ps);

    // Q = M^T orth(P), in one all-reduce, averaged.
    std::vector<torch::Tensor> Qs;
    for (size_t k = 0; k < matrices_.size(); ++k) {
        Ps[k] = orthonormalise(Ps[k]);
        Qs.push_back(torch::bmm(Ms[k].transpose(1, 2), Ps[k]));
    }
    torch::Tensor q_buffer = gather(Qs);
    comm_.all_reduce(q_buffer);
    q_buffer.div_(divisor_);
    scatter(q_buffer, Qs);

    // M_hat = P Q^T; E = M - M_hat; the captured energy of each matrix.
    auto energy_K = torch::zeros({int64_t(matrices_.size())}, torch::kFloat64);
    for (size_t k = 0; k < matrices_.size(); ++k) {
        Matrix& mx = matrices_[k];
        torch::Tensor M_hat = torch::bmm(Ps[k], Qs[k].transpose(1, 2));
        const double m_sq = mx.error_BNM.square().sum(torch::kFloat64).item<double>();
        const double hat_sq = M_hat.square().sum(torch::kFloat64).item<double>();
        energy_K[int64_t(k)] = m_sq > 0 ? std::min(1.0, hat_sq / m_sq) : 1.0;
        mx.error_BNM.sub_(M_hat);
        mx.grad_BNM.copy_(M_hat);
        mx.q_BMC.narrow(2, 0, mx.rank).copy_(Qs[k]);
    }
    stats_.bytes_sent = (p_buffer.numel() + q_buffer.numel() + flat.numel() + energy_K.numel() * 2) *
                        int64_t(sizeof(float));
    stats_.compressed = true;
    agree_on_ranks(energy_K, step);
    if (flat_request) {
        flat_request->wait();
        flat.div_(divisor_);
        scatter(flat, flat_);
    }
}

void LowRankCompressor::agree_on_ranks(const torch::Tensor& energy_K, int64_t step) {
    // The mean energy over the ranks, then one rule applied identically everywhere.
    torch::Tensor mean_K = energy_K.clone();
    comm_.all_reduce(mean_K);
    mean_K.div_(double(comm_.size()));
    stats_.mean_energy = mean_K.numel() > 0 ? mean_K.mean().item<double>() : 0;
    for (size_t k = 0; k < matrices_.size(); ++k) {
        Matrix& mx = matrices_[k];
        const double e = mean_K[int64_t(k)].item<double>();
        if (e < cfg_.energy_low && mx.rank < mx.cap) {
            mx.q_BMC.narrow(2, mx.rank, 1).copy_(seeded_columns(k, step, mx.rank, 1));
            ++mx.rank;
        } else if (e > cfg_.energy_high && mx.rank > mx.floor) {
            --mx.rank;
        }
        ranks_K_[int64_t(k)] = float(mx.rank);
    }
}

std::vector<int64_t> LowRankCompressor::ranks() const {
    std::vector<int64_t> r;
    for (const auto& mx : matrices_) r.push_back(mx.rank);
    return r;
}

std::vector<std::string> LowRankCompressor::matrix_names() const {
    std::vector<std::string> names;
    for (const auto& mx : matrices_) names.push_back(mx.name);
    return names;
}

std::vector<CompressState> LowRankCompressor::state() {
    std::vector<CompressState> s;
    for (auto& mx : matrices_) {
        std::string name = mx.name;
        if (auto at = name.find("{}"); at != std::string::npos) name.replace(at, 2, "stacked");
        s.push_back({group_name_ + "/" + name + "/error", mx.error_BNM});
        s.push_back({group_name_ + "/" + name + "/q", mx.q_BMC});
    }
    if (!matrices_.empty()) s.push_back({group_name_ + "/ranks", ranks_K_});
    return s;
}

void LowRankCompressor::state_loaded() {
    for (size_t k = 0; k < matrices_.size(); ++k) {
        const float r = ranks_K_[int64_t(k)].item<float>();
        Matrix& mx = matrices_[k];
        if (!(r >= float(mx.floor) && r <= float(mx.cap) && r == std::floor(r)))
            throw CheckpointError(fmt::format("/state/compress/{}/ranks: rank {} of {} outside [{}, {}]", group_name_, r,
                                              mx.name, mx.floor, mx.cap));
        mx.rank = int64_t(r);
    }
}

}  // namespace moe
