#include "nn/transformer.h"

#include "core/ops.h"

namespace kiln::nn {

TransformerEncoderLayer::TransformerEncoderLayer(const TransformerEncoderLayerOptions& options) : options(options) {
  const auto& o = this->options;
  KILN_CHECK(o.activation == "relu" || o.activation == "gelu",
             "[TransformerEncoderLayer] activation should be relu or "
             "gelu, not '",
             o.activation, "'");
  KILN_CHECK(o.dim_feedforward > 0, "[TransformerEncoderLayer] dim_feedforward must be positive, got ",
             o.dim_feedforward);
  reset();
}

TransformerEncoderLayer::TransformerEncoderLayer(int64_t d_model, int64_t nhead, int64_t dim_feedforward,
                                                 double dropout, std::string activation, double layer_norm_eps,
                                                 bool batch_first, bool norm_first, bool bias)
    : TransformerEncoderLayer(TransformerEncoderLayerOptions{d_model, nhead, dim_feedforward, dropout,
                                                             std::move(activation), layer_norm_eps, batch_first,
                                                             norm_first, bias}) {}

void TransformerEncoderLayer::reset() {
  const auto& o = options;
  self_attn = register_module("self_attn", std::make_shared<MultiheadAttention>(MultiheadAttentionOptions{
                                               o.d_model, o.nhead, o.dropout, o.bias, o.batch_first}));
  linear1 = register_module("linear1", std::make_shared<Linear>(o.d_model, o.dim_feedforward, o.bias));
  dropout = register_module("dropout", std::make_shared<Dropout>(o.dropout));
  linear2 = register_module("linear2", std::make_shared<Linear>(o.dim_feedforward, o.d_model, o.bias));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(o.d_model, o.layer_norm_eps, true, o.bias));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(o.d_model, o.layer_norm_eps, true, o.bias));
  dropout1 = register_module("dropout1", std::make_shared<Dropout>(o.dropout));
  dropout2 = register_module("dropout2", std::make_shared<Dropout>(o.dropout));
}

Tensor TransformerEncoderLayer::self_attention_block(const Tensor& x, const Tensor& mask,
                                                     const Tensor& key_padding_mask) {
  Tensor out = std::get<0>(self_attn->forward(x, x, x, key_padding_mask, /*need_weights=*/false, mask));
  return dropout1->forward(out);
}

Tensor TransformerEncoderLayer::feed_forward_block(const Tensor& x) {
  Tensor hidden = linear1->forward(x);
  hidden = options.activation == "gelu" ? gelu(hidden) : relu(hidden);
  return dropout2->forward(linear2->forward(dropout->forward(hidden)));
}

Tensor TransformerEncoderLayer::forward(const Tensor& src, const Tensor& src_mask, const Tensor& src_key_padding_mask) {
  KILN_CHECK(src.defined(), "[TransformerEncoderLayer] src is an undefined tensor");
  KILN_CHECK((src.dim() == 3 || src.dim() == 2) && src.size(-1) == options.d_model,
             "[TransformerEncoderLayer] expected src of shape (S, N, ", options.d_model, ")",
             options.batch_first ? " (batch_first: (N, S, E))" : "", " or (S, ", options.d_model, "), but got shape ",
             src.sizes());
  Tensor x = src;
  if (options.norm_first) {
    x = x + self_attention_block(norm1->forward(x), src_mask, src_key_padding_mask);
    x = x + feed_forward_block(norm2->forward(x));
  } else {
    x = norm1->forward(x + self_attention_block(x, src_mask, src_key_padding_mask));
    x = norm2->forward(x + feed_forward_block(x));
  }
  return x;
}

TransformerEncoder::TransformerEncoder(const std::shared_ptr<TransformerEncoderLayer>& encoder_layer,
                                       int64_t num_layers, std::shared_ptr<Module> norm)
    : num_layers(num_layers) {
  KILN_CHECK(encoder_layer != nullptr, "[TransformerEncoder] encoder_layer is null");
  KILN_CHECK(num_layers >= 0, "[TransformerEncoder] num_layers must be non-negative, got ", num_layers);
  layers = register_module("layers", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < num_layers; ++i) layers->push_back(encoder_layer->clone());
  if (norm) this->norm = register_module("norm", std::move(norm));
}

TransformerEncoder::TransformerEncoder(std::shared_ptr<ModuleList> layers, std::shared_ptr<Module> norm)
    : num_layers(static_cast<int64_t>(layers->size())) {
  this->layers = register_module("layers", std::move(layers));
  if (norm) this->norm = register_module("norm", std::move(norm));
}

Tensor TransformerEncoder::forward(const Tensor& src, const Tensor& mask, const Tensor& src_key_padding_mask) {
  Tensor x = src;
  for (size_t i = 0; i < layers->size(); ++i)
    x = layers->at<TransformerEncoderLayer>(static_cast<int64_t>(i))->forward(x, mask, src_key_padding_mask);
  return norm ? norm->forward(x) : x;
}

std::shared_ptr<Module> TransformerEncoder::clone() const {
  auto copy = std::shared_ptr<TransformerEncoder>(
      new TransformerEncoder(std::static_pointer_cast<ModuleList>(layers->clone()), norm ? norm->clone() : nullptr));
  copy->train(is_training());
  return copy;
}

}  // namespace kiln::nn
