#pragma once
// Embedding: a lookup table of num_embeddings vectors of size embedding_dim.
#include <optional>

#include "nn/module.h"

namespace kiln::nn {

// weight ~ N(0, 1) with row padding_idx zeroed; that row receives no gradient. A negative
// padding_idx counts from the end.
class Embedding : public Cloneable<Embedding> {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx = std::nullopt);
  // Wraps an existing [num_embeddings, embedding_dim] table (torch.nn.Embedding.from_pretrained).
  static std::shared_ptr<Embedding> from_pretrained(const Tensor& embeddings, bool freeze = true,
                                                    std::optional<int64_t> padding_idx = std::nullopt);
  Tensor forward(const Tensor& indices) override;
  std::string extra_repr() const override;
  void reset_parameters();

  int64_t num_embeddings;
  int64_t embedding_dim;
  std::optional<int64_t> padding_idx;  // normalised to [0, num_embeddings)
  Tensor weight;

 protected:
  void reset() override;
};

}  // namespace kiln::nn
