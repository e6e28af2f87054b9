#include "nn/attention.h"

#include <cmath>
#include <limits>

#include "autograd/grad_mode.h"
#include "nn/init.h"

namespace kiln::nn {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Bool masks become additive float masks (true -> -inf); float masks are used as they are.
Tensor additive_mask(const char* what, const Tensor& mask, DType dtype) {
  KILN_CHECK(mask.dtype() == DType::Bool || mask.is_floating_point(), "[MultiheadAttention] only bool and floating ",
             what, " are supported, got dtype ", mask.dtype());
  if (mask.dtype() != DType::Bool) return mask.to(dtype);
  return zeros(mask.sizes(), dtype).masked_fill(mask, kNegInf);
}

}  // namespace

MultiheadAttention::MultiheadAttention(const MultiheadAttentionOptions& options) : options(options) {
  const auto& o = this->options;
  KILN_CHECK(o.embed_dim > 0 && o.num_heads > 0, "[MultiheadAttention] embed_dim and num_heads must be positive, got ",
             o.embed_dim, " and ", o.num_heads);
  KILN_CHECK(o.embed_dim % o.num_heads == 0, "[MultiheadAttention] embed_dim (", o.embed_dim,
             ") must be divisible by num_heads (", o.num_heads, ")");
  KILN_CHECK(o.dropout >= 0.0 && o.dropout <= 1.0,
             "[MultiheadAttention] dropout probability has to be between 0 and 1, "
             "but got ",
             o.dropout);
  head_dim = o.embed_dim / o.num_heads;
  reset();
}

MultiheadAttention::MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout, bool bias,
                                       bool batch_first)
    : MultiheadAttention(MultiheadAttentionOptions{embed_dim, num_heads, dropout, bias, batch_first}) {}

void MultiheadAttention::reset() {
  const int64_t e = options.embed_dim;
  in_proj_weight = register_parameter("in_proj_weight", empty({3 * e, e}));
  in_proj_bias = register_parameter("in_proj_bias", options.bias ? empty({3 * e}) : Tensor());
  out_proj = register_module("out_proj", std::make_shared<Linear>(e, e, options.bias));
  reset_parameters();
}

void MultiheadAttention::reset_parameters() {
  init::xavier_uniform_(in_proj_weight);
  if (in_proj_bias.defined()) init::zeros_(in_proj_bias);
  if (out_proj->bias.defined()) init::zeros_(out_proj->bias);
}

std::tuple<Tensor, Tensor> MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                                       const Tensor& key_padding_mask, bool need_weights,
                                                       const Tensor& attn_mask, bool average_attn_weights) {
  const int64_t e = options.embed_dim, h = options.num_heads;
  KILN_CHECK(query.defined() && key.defined() && value.defined(),
             "[MultiheadAttention] query, key and value must be defined tensors");
  KILN_CHECK(query.dim() == 3 || query.dim() == 2,
             "[MultiheadAttention] expected a 3D (batched) or 2D (unbatched) "
             "query, but got query of shape ",
             query.sizes());
  KILN_CHECK(key.dim() == query.dim() && value.dim() == query.dim(), "[MultiheadAttention] key and value must have ",
             query.dim(), " dims like the query; got query ", query.sizes(), ", key ", key.sizes(), ", value ",
             value.sizes());
  KILN_CHECK(query.size(-1) == e && key.size(-1) == e && value.size(-1) == e,
             "[MultiheadAttention] expected query, key and value with embedding dimension ", e,
             " (embed_dim); got query ", query.sizes(), ", key ", key.sizes(), ", value ", value.sizes());
  const bool batched = query.dim() == 3;
  // Work in (L, N, E).
  auto to_lne = [&](const Tensor& t) {
    if (!batched) return t.unsqueeze(1);
    return options.batch_first ? t.transpose(0, 1) : t;
  };
  Tensor q = to_lne(query), k = to_lne(key), v = to_lne(value);
  const int64_t tgt_len = q.size(0), n = q.size(1), src_len = k.size(0);
  KILN_CHECK(k.size(0) == v.size(0) && k.size(1) == v.size(1), "[MultiheadAttention] key shape ", key.sizes(),
             " does not match value shape ", value.sizes());
  KILN_CHECK(k.size(1) == n, "[MultiheadAttention] query and key have different batch sizes: query ", query.sizes(),
             ", key ", key.sizes());

  // Input projections: one matmul for self-attention, three slices of the packed weight otherwise.
  const std::optional<Tensor> no_bias;
  if (query.is_same(key) && key.is_same(value)) {
    Tensor qkv = linear(q, in_proj_weight, in_proj_bias.defined() ? std::optional<Tensor>(in_proj_bias) : no_bias);
    std::vector<Tensor> parts = qkv.chunk(3, -1);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    std::vector<Tensor> w = in_proj_weight.chunk(3, 0);
    std::vector<Tensor> b = in_proj_bias.defined() ? in_proj_bias.chunk(3, 0) : std::vector<Tensor>(3);
    auto bias_of = [&](int i) { return b[i].defined() ? std::optional<Tensor>(b[i]) : no_bias; };
    q = linear(q, w[0], bias_of(0));
    k = linear(k, w[1], bias_of(1));
    v = linear(v, w[2], bias_of(2));
  }

  // One additive mask of shape (1 or N*H, L or 1, S).
  Tensor mask;
  if (attn_mask.defined()) {
    mask = additive_mask("attn_mask", attn_mask, q.dtype());
    if (mask.dim() == 2) {
      KILN_CHECK(mask.size(0) == tgt_len && mask.size(1) == src_len,
                 "[MultiheadAttention] the shape of the 2D "
                 "attn_mask is ",
                 attn_mask.sizes(), ", but should be [", tgt_len, ", ", src_len, "] (L, S)");
      mask = mask.unsqueeze(0);
    } else {
      KILN_CHECK(mask.dim() == 3 && mask.size(0) == n * h && mask.size(1) == tgt_len && mask.size(2) == src_len,
                 "[MultiheadAttention] attn_mask must be 2D (L, S) = [", tgt_len, ", ", src_len,
                 "] or 3D (N * num_heads, L, S) = [", n * h, ", ", tgt_len, ", ", src_len, "], but got shape ",
                 attn_mask.sizes());
    }
  }
  if (key_padding_mask.defined()) {
    Tensor kpm = additive_mask("key_padding_mask", key_padding_mask, q.dtype());
    if (!batched) {
      KILN_CHECK(kpm.dim() == 1 && kpm.size(0) == src_len, "[MultiheadAttention] expected key_padding_mask of shape [",
                 src_len, "] (S) for unbatched inputs, but got ", key_padding_mask.sizes());
      kpm = kpm.unsqueeze(0);
    }
    KILN_CHECK(kpm.dim() == 2 && kpm.size(0) == n && kpm.size(1) == src_len,
               "[MultiheadAttention] expected key_padding_mask of shape [", n, ", ", src_len, "] (N, S), but got ",
               key_padding_mask.sizes());
    kpm = kpm.view({n, 1, 1, src_len}).expand({n, h, 1, src_len}).reshape({n * h, 1, src_len});
    mask = mask.defined() ? mask + kpm : kpm;
  }

  // Heads: (L, N, E) -> (N * H, L, head_dim).
  auto split_heads = [&](const Tensor& t, int64_t len) { return t.reshape({len, n * h, head_dim}).transpose(0, 1); };
  q = split_heads(q, tgt_len);
  k = split_heads(k, src_len);
  v = split_heads(v, src_len);

  Tensor scores = bmm(q * (1.0 / std::sqrt(static_cast<double>(head_dim))), k.transpose(1, 2));
  if (mask.defined()) scores = scores + mask;
  Tensor weights = softmax(scores, -1);
  if (is_training() && options.dropout > 0.0) weights = dropout(weights, options.dropout, true);

  Tensor out = bmm(weights, v);  // (N * H, L, head_dim)
  out = out.transpose(0, 1).reshape({tgt_len * n, e});
  out = out_proj->forward(out).view({tgt_len, n, e});
  if (!batched)
    out = out.squeeze(1);
  else if (options.batch_first)
    out = out.transpose(0, 1);

  Tensor avg;
  if (need_weights) {
    avg = weights.view({n, h, tgt_len, src_len});
    if (average_attn_weights) avg = avg.mean({1});
    if (!batched) avg = avg.squeeze(0);
  }
  return {out, avg};
}

Tensor generate_square_subsequent_mask(int64_t n, DType dtype, Device device) {
  KILN_CHECK(n >= 0, "[generate_square_subsequent_mask] size must be non-negative, got ", n);
  KILN_CHECK(is_floating_point(dtype), "[generate_square_subsequent_mask] expected a floating point dtype, got ",
             dtype);
  return triu(full({n, n}, kNegInf, TensorOptions(dtype).device(device)), 1);
}

}  // namespace kiln::nn
