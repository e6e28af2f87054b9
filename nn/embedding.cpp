#include "nn/embedding.h"

#include <sstream>

#include "autograd/grad_mode.h"
#include "core/ops.h"
#include "nn/init.h"

namespace kiln::nn {

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx)
    : num_embeddings(num_embeddings), embedding_dim(embedding_dim) {
  KILN_CHECK(num_embeddings >= 0 && embedding_dim >= 0,
             "[Embedding] num_embeddings and embedding_dim must be non-negative, got ", num_embeddings, " and ",
             embedding_dim);
  if (padding_idx) {
    KILN_CHECK(*padding_idx < num_embeddings && *padding_idx >= -num_embeddings, "[Embedding] padding_idx ",
               *padding_idx, " must be within num_embeddings (", num_embeddings, ")");
    this->padding_idx = *padding_idx < 0 ? *padding_idx + num_embeddings : *padding_idx;
  }
  reset();
}

std::shared_ptr<Embedding> Embedding::from_pretrained(const Tensor& embeddings, bool freeze,
                                                      std::optional<int64_t> padding_idx) {
  KILN_CHECK(embeddings.defined() && embeddings.dim() == 2,
             "[Embedding::from_pretrained] embeddings must be a 2-dimensional tensor",
             embeddings.defined() ? ", got shape " : "", embeddings.defined() ? embeddings.sizes().vec() : Shape{});
  auto e = std::make_shared<Embedding>(embeddings.size(0), embeddings.size(1), padding_idx);
  // Shares the given storage, as PyTorch's from_pretrained does.
  detail::set_data(e->weight, embeddings.detach());
  e->weight.requires_grad_(!freeze);
  return e;
}

void Embedding::reset() {
  weight = register_parameter("weight", empty({num_embeddings, embedding_dim}));
  reset_parameters();
}

void Embedding::reset_parameters() {
  init::normal_(weight);
  if (padding_idx) {
    NoGradGuard no_grad;
    weight.select(0, *padding_idx).fill_(0);
  }
}

Tensor Embedding::forward(const Tensor& indices) {
  KILN_CHECK(indices.defined(), "[Embedding] indices is an undefined tensor");
  KILN_CHECK(!indices.is_floating_point() && indices.dtype() != DType::Bool,
             "[Embedding] expected integer indices, but got dtype ", indices.dtype());
  return embedding(weight, indices, padding_idx);
}

std::string Embedding::extra_repr() const {
  std::ostringstream os;
  os << num_embeddings << ", " << embedding_dim;
  if (padding_idx) os << ", padding_idx=" << *padding_idx;
  return os.str();
}

}  // namespace kiln::nn
