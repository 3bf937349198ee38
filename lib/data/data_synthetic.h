// The synthetic corpus: a mixture of random first-order Markov sources. Each sample is one
// document: a source k chosen uniformly, a first token uniform over the vocabulary, then k's
// chain. Each state has `branching` successors with Dirichlet(concentration) probabilities, so
// sources differ in which transitions exist: a model must infer the source from context (and
// experts have distinct sources to specialise on).
//
// The entropy bound is exact: the Bayes-optimal predictor knows the sources and keeps the
// posterior over them given the sample's prefix; its mean log loss on the eval samples is the
// lowest expected loss any model that sees the same prefix can reach.
#pragma once

#include <cstdint>
#include <vector>

#include "data/data_source.h"

namespace moe {

class MarkovMixture {
   public:
    explicit MarkovMixture(const SyntheticDataConfig& cfg);

    int64_t vocab() const { return V_; }
    int64_t num_sources() const { return K_; }
    // P(next = b | current = a) under source k.
    double prob(int64_t k, int64_t a, int64_t b) const { return P_[(k * V_ + a) * V_ + b]; }

    // Fills tokens[0..n) of one document drawn with `rng_seed`.
    void generate(uint64_t rng_seed, int32_t* tokens, int64_t n) const;
    // Sum over positions 1..n-1 of -log p_Bayes(tokens[t] | tokens[<t]) (position 0's uniform
    // loss is added by the caller when position 0 is a target).
    double bayes_loss(const int32_t* tokens, int64_t n) const;
    // Mean over sources of the stationary conditional entropy (nats/token): the long-document limit.
    double asymptotic_entropy_rate() const;

   private:
    int64_t V_, K_;
    std::vector<double> P_;                    // [K, V, V] transition probabilities
    std::vector<std::vector<int32_t>> succ_;   // [K * V] successors with non-zero probability
    std::vector<std::vector<double>> cdf_;     // [K * V] cumulative probabilities of succ_
};

}  // namespace moe
