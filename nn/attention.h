#pragma once
// MultiheadAttention (torch.nn.MultiheadAttention, packed projections) and the causal mask helper.
#include <tuple>

#include "core/ops.h"
#include "nn/linear.h"
#include "nn/module.h"

namespace kiln::nn {

struct MultiheadAttentionOptions {
  int64_t embed_dim;
  int64_t num_heads;
  double dropout = 0.0;  // on the attention weights, in training only
  bool bias = true;
  bool batch_first = false;  // inputs (N, L, E) instead of (L, N, E)
};

// Parameters exactly as PyTorch names them (so state dicts interchange): in_proj_weight [3E, E]
// (xavier_uniform_), in_proj_bias [3E] (zeros), out_proj.weight [E, E] (Linear's default init),
// out_proj.bias [E] (zeros). Key and value have the query's embedding size (kdim = vdim = E).
class MultiheadAttention : public Cloneable<MultiheadAttention> {
 public:
  explicit MultiheadAttention(const MultiheadAttentionOptions& options);
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout = 0.0, bool bias = true,
                     bool batch_first = false);

  // query (L, N, E), key and value (S, N, E) — (N, L, E) / (N, S, E) with batch_first — or
  // unbatched (L, E) / (S, E). Masks follow PyTorch: bool entries that are true are masked out;
  // float masks are added to the attention scores.
  //   key_padding_mask: (N, S), or (S) unbatched.
  //   attn_mask: (L, S) or (N * num_heads, L, S).
  // Returns (output of the query's shape, attention weights): the weights are (N, L, S) averaged
  // over heads, (N, num_heads, L, S) when !average_attn_weights, and undefined when !need_weights.
  std::tuple<Tensor, Tensor> forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                     const Tensor& key_padding_mask = {}, bool need_weights = true,
                                     const Tensor& attn_mask = {}, bool average_attn_weights = true);
  std::tuple<Tensor, Tensor> operator()(const Tensor& query, const Tensor& key, const Tensor& value,
                                        const Tensor& key_padding_mask = {}, bool need_weights = true,
                                        const Tensor& attn_mask = {}, bool average_attn_weights = true) {
    return forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights);
  }
  using Module::forward;
  void reset_parameters();

  MultiheadAttentionOptions options;
  int64_t head_dim;
  Tensor in_proj_weight;
  Tensor in_proj_bias;  // undefined without bias
  std::shared_ptr<Linear> out_proj;

 protected:
  void reset() override;
};

// An (n, n) float mask with -inf above the diagonal and 0 elsewhere: position i attends to
// positions <= i. (torch.nn.Transformer.generate_square_subsequent_mask)
Tensor generate_square_subsequent_mask(int64_t n, DType dtype = DType::Float32, Device device = Device(kCPU));

}  // namespace kiln::nn
