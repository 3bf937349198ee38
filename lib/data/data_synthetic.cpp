#include "data/data_synthetic.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"
#include "data/rng.h"

namespace moe {

MarkovMixture::MarkovMixture(const SyntheticDataConfig& cfg)
    : V_(cfg.vocab), K_(cfg.num_sources), P_(size_t(cfg.num_sources * cfg.vocab * cfg.vocab), 0.0) {
    if (cfg.branching > cfg.vocab)
        throw ConfigError(fmt::format("data.synthetic.branching: {} exceeds data.synthetic.vocab {}", cfg.branching, cfg.vocab));
    Rng rng(mix_keys(cfg.seed, 0x5eed));
    succ_.resize(size_t(K_ * V_));
    cdf_.resize(size_t(K_ * V_));
    std::vector<int32_t> pool(static_cast<size_t>(V_));
    for (int64_t k = 0; k < K_; ++k)
        for (int64_t a = 0; a < V_; ++a) {
            // `branching` distinct successors by a partial Fisher-Yates shuffle.
            for (int64_t i = 0; i < V_; ++i) pool[size_t(i)] = int32_t(i);
            std::vector<int32_t> succ(size_t(cfg.branching));
            for (int64_t i = 0; i < cfg.branching; ++i) {
                const int64_t j = i + int64_t(rng.below(uint64_t(V_ - i)));
                std::swap(pool[size_t(i)], pool[size_t(j)]);
                succ[size_t(i)] = pool[size_t(i)];
            }
            std::sort(succ.begin(), succ.end());
            std::vector<double> w(succ.size());
            double total = 0;
            for (auto& x : w) total += (x = rng.gamma(cfg.concentration) + 1e-12);
            std::vector<double> cdf(succ.size());
            double acc = 0;
            for (size_t i = 0; i < succ.size(); ++i) {
                const double p = w[i] / total;
                P_[size_t((k * V_ + a) * V_ + succ[i])] = p;
                cdf[i] = (acc += p);
            }
            cdf.back() = 1.0;
            succ_[size_t(k * V_ + a)] = std::move(succ);
            cdf_[size_t(k * V_ + a)] = std::move(cdf);
        }
}

void MarkovMixture::generate(uint64_t rng_seed, int32_t* tokens, int64_t n) const {
    Rng rng(rng_seed);
    const int64_t k = int64_t(rng.below(uint64_t(K_)));
    int64_t cur = int64_t(rng.below(uint64_t(V_)));
    tokens[0] = int32_t(cur);
    for (int64_t t = 1; t < n; ++t) {
        const auto& cdf = cdf_[size_t(k * V_ + cur)];
        const double u = rng.uniform();
        const size_t i = size_t(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
        cur = succ_[size_t(k * V_ + cur)][std::min(i, cdf.size() - 1)];
        tokens[t] = int32_t(cur);
    }
}

double MarkovMixture::bayes_loss(const int32_t* tokens, int64_t n) const {
    // log posterior weights over sources (unnormalised); the first token says nothing.
    std::vector<double> logw(size_t(K_), 0.0);
    double loss = 0;
    for (int64_t t = 1; t < n; ++t) {
        const int64_t a = tokens[t - 1], b = tokens[t];
        const double m = *std::max_element(logw.begin(), logw.end());
        double norm = 0, pred = 0;
        for (int64_t k = 0; k < K_; ++k) {
            const double w = std::exp(logw[size_t(k)] - m);
            norm += w;
            pred += w * prob(k, a, b);
        }
        loss -= std::log(pred / norm);
        for (int64_t k = 0; k < K_; ++k) {
            const double p = prob(k, a, b);
            logw[size_t(k)] = p > 0 ? logw[size_t(k)] + std::log(p) : -std::numeric_limits<double>::infinity();
        }
    }
    return loss;
}

double MarkovMixture::asymptotic_entropy_rate() const {
    double total = 0;
    std::vector<double> pi(static_cast<size_t>(V_)), next(static_cast<size_t>(V_));
    for (int64_t k = 0; k < K_; ++k) {
        // Stationary distribution by power iteration (mixed with the uniform start to stay aperiodic).
        std::fill(pi.begin(), pi.end(), 1.0 / double(V_));
        for (int it = 0; it < 2000; ++it) {
            std::fill(next.begin(), next.end(), 0.0);
            for (int64_t a = 0; a < V_; ++a)
                for (int64_t b = 0; b < V_; ++b) next[size_t(b)] += pi[size_t(a)] * prob(k, a, b);
            for (int64_t a = 0; a < V_; ++a) pi[size_t(a)] = 0.5 * pi[size_t(a)] + 0.5 * next[size_t(a)];
        }
        double h = 0;
        for (int64_t a = 0; a < V_; ++a)
            for (int64_t b = 0; b < V_; ++b) {
                const double p = prob(k, a, b);
                if (p > 0) h -= pi[size_t(a)] * p * std::log(p);
            }
        total += h;
    }
    return total / double(K_);
}

}  // namespace moe
