#pragma once
// TransformerEncoderLayer and TransformerEncoder (torch.nn.TransformerEncoder*).
#include <string>

#include "nn/attention.h"
#include "nn/container.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/normalization.h"

namespace kiln::nn {

struct TransformerEncoderLayerOptions {
  int64_t d_model;
  int64_t nhead;
  int64_t dim_feedforward = 2048;
  double dropout = 0.1;
  std::string activation = "relu";  // "relu" | "gelu"
  double layer_norm_eps = 1e-5;
  bool batch_first = false;
  bool norm_first = false;  // pre-norm: x + sa(norm1(x)), x + ff(norm2(x))
  bool bias = true;
};

// Submodules named as PyTorch's: self_attn, linear1, dropout, linear2, norm1, norm2, dropout1,
// dropout2, so state dicts interchange.
class TransformerEncoderLayer : public Cloneable<TransformerEncoderLayer> {
 public:
  explicit TransformerEncoderLayer(const TransformerEncoderLayerOptions& options);
  TransformerEncoderLayer(int64_t d_model, int64_t nhead, int64_t dim_feedforward = 2048, double dropout = 0.1,
                          std::string activation = "relu", double layer_norm_eps = 1e-5, bool batch_first = false,
                          bool norm_first = false, bool bias = true);

  // src (S, N, E), (N, S, E) with batch_first, or (S, E); src_mask (S, S) or (N * nhead, S, S);
  // src_key_padding_mask (N, S). Masks as in MultiheadAttention.
  Tensor forward(const Tensor& src, const Tensor& src_mask, const Tensor& src_key_padding_mask = {});
  Tensor forward(const Tensor& src) override { return forward(src, Tensor(), Tensor()); }
  using Module::operator();
  Tensor operator()(const Tensor& src, const Tensor& src_mask, const Tensor& src_key_padding_mask = {}) {
    return forward(src, src_mask, src_key_padding_mask);
  }

  TransformerEncoderLayerOptions options;
  std::shared_ptr<MultiheadAttention> self_attn;
  std::shared_ptr<Linear> linear1;
  std::shared_ptr<Dropout> dropout;
  std::shared_ptr<Linear> linear2;
  std::shared_ptr<LayerNorm> norm1;
  std::shared_ptr<LayerNorm> norm2;
  std::shared_ptr<Dropout> dropout1;
  std::shared_ptr<Dropout> dropout2;

 protected:
  void reset() override;

 private:
  Tensor self_attention_block(const Tensor& x, const Tensor& mask, const Tensor& key_padding_mask);
  Tensor feed_forward_block(const Tensor& x);
};

// num_layers deep copies of `encoder_layer` (layers.0, layers.1, ...), then an optional final
// norm. Like PyTorch, every layer starts with the prototype's values.
class TransformerEncoder : public Module {
 public:
  TransformerEncoder(const std::shared_ptr<TransformerEncoderLayer>& encoder_layer, int64_t num_layers,
                     std::shared_ptr<Module> norm = nullptr);

  Tensor forward(const Tensor& src, const Tensor& mask, const Tensor& src_key_padding_mask = {});
  Tensor forward(const Tensor& src) override { return forward(src, Tensor(), Tensor()); }
  using Module::operator();
  Tensor operator()(const Tensor& src, const Tensor& mask, const Tensor& src_key_padding_mask = {}) {
    return forward(src, mask, src_key_padding_mask);
  }
  std::shared_ptr<Module> clone() const override;

  int64_t num_layers;
  std::shared_ptr<ModuleList> layers;
  std::shared_ptr<Module> norm;  // null when absent

 private:
  TransformerEncoder(std::shared_ptr<ModuleList> layers, std::shared_ptr<Module> norm);
};

}  // namespace kiln::nn
