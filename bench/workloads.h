#pragma once
// The model workloads that bench_fusion (eager vs compiled vs interpreter) and bench_train (kiln
// vs LibTorch) both run, defined once, with the GEMM flops each call does (the of_sgemm counters;
// elementwise work is not counted, so the share is a lower bound of how busy the machine is).
//   MLP     784-H-H-10 (ReLU), cross_entropy, an optimizer step; input [B, 784]
//   CNN     conv(1->16, 3x3, pad 1)-ReLU-maxpool 2, conv(16->32)-ReLU-maxpool 2, linear 1568->10;
//           cross_entropy, SGD with momentum 0.9; input [B, 1, 28, 28]
//   Encoder nn::TransformerEncoderLayer (d_model 256, 4 heads, ff 1024, dropout 0.1), src
//           [128, 8, 256] (seq, batch, d_model): training step = forward + backward of
//           out.pow(2).mean(); forward = eval mode (no dropout) under NoGradGuard
#include <kiln/kiln.h>

#include <memory>

#include "bench/ceilings.h"

namespace kiln::bench {

enum class Opt { SGD, SGDMomentum, Adam };

inline std::unique_ptr<optim::Optimizer> make_optimizer(Opt which, const std::vector<Tensor>& params) {
  switch (which) {
    case Opt::SGD: return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.01});
    case Opt::SGDMomentum: return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.01, .momentum = 0.9});
    case Opt::Adam: return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = 1e-3});
  }
  return nullptr;
}

// A classifier with its optimizer and one batch.
struct Classifier {
  std::shared_ptr<nn::Sequential> model;
  std::unique_ptr<optim::Optimizer> opt;
  Tensor x, y;
};

inline std::shared_ptr<Classifier> make_mlp(int64_t hidden, Opt which, int64_t batch) {
  auto s = std::make_shared<Classifier>();
  manual_seed(0);
  s->model = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(784, hidden), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::Linear>(hidden, hidden), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::Linear>(hidden, 10));
  s->opt = make_optimizer(which, s->model->parameters());
  s->x = randn({batch, 784});
  s->y = randint(0, 10, {batch});
  return s;
}

inline double mlp_step_flops(int64_t hidden, int64_t batch) {
  const double b = static_cast<double>(batch), h = static_cast<double>(hidden);
  return train_flops(gemm_flops(b, 784, h), false) + train_flops(gemm_flops(b, h, h), true) +
         train_flops(gemm_flops(b, h, 10), true);
}

inline std::shared_ptr<Classifier> make_cnn(Opt which, int64_t batch) {
  auto s = std::make_shared<Classifier>();
  manual_seed(0);
  s->model = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(1, 16, 3, /*stride=*/1, /*padding=*/1), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::MaxPool2d>(2),  // 16 x 14 x 14
      std::make_shared<nn::Conv2d>(16, 32, 3, /*stride=*/1, /*padding=*/1), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::MaxPool2d>(2),  // 32 x 7 x 7
      std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(32 * 7 * 7, 10));
  s->opt = make_optimizer(which, s->model->parameters());
  s->x = randn({batch, 1, 28, 28});
  s->y = randint(0, 10, {batch});
  return s;
}

// Convolutions as the GEMMs they amount to: [B*H*W, Cin*9] x [Cin*9, Cout].
inline double cnn_step_flops(int64_t batch) {
  const double b = static_cast<double>(batch);
  return train_flops(gemm_flops(b * 28 * 28, 1 * 9, 16), false) + train_flops(gemm_flops(b * 14 * 14, 16 * 9, 32), true) +
         train_flops(gemm_flops(b, 32 * 7 * 7, 10), true);
}

// zero_grad, forward, cross_entropy, backward, optimizer step.
inline Tensor classifier_step(Classifier& s) {
  s.opt->zero_grad();
  Tensor loss = cross_entropy(s.model->forward(s.x), s.y);
  loss.backward();
  s.opt->step();
  return loss.detach();  // a result with autograd history would keep a compiled step tracing
}

struct Encoder {
  std::shared_ptr<nn::TransformerEncoderLayer> layer;
  Tensor src;
};

constexpr int64_t kEncSeq = 128, kEncBatch = 8, kEncModel = 256, kEncHeads = 4, kEncFF = 1024;

inline std::shared_ptr<Encoder> make_encoder(bool inference) {
  auto e = std::make_shared<Encoder>();
  manual_seed(0);
  e->layer = std::make_shared<nn::TransformerEncoderLayer>(nn::TransformerEncoderLayerOptions{
      .d_model = kEncModel, .nhead = kEncHeads, .dim_feedforward = kEncFF, .dropout = 0.1});
  if (inference) e->layer->eval();
  e->src = randn({kEncSeq, kEncBatch, kEncModel});
  return e;
}

inline Tensor encoder_train_step(Encoder& e) {
  e.layer->zero_grad();
  Tensor out = e.layer->forward(e.src);
  Tensor loss = out.pow(2).mean();
  loss.backward();
  return loss.detach();
}

// Callers hold a NoGradGuard.
inline Tensor encoder_forward(Encoder& e) { return e.layer->forward(e.src); }

// Input projection [T, d] x [d, 3d], output projection, the two feed-forward GEMMs, and per head
// the scores Q K^T and their product with V. The input needs no gradient (src is a plain tensor).
inline double encoder_flops(bool training) {
  const double t = kEncSeq * kEncBatch, d = kEncModel, ff = kEncFF, s = kEncSeq, dh = kEncModel / kEncHeads;
  const double heads = kEncBatch * kEncHeads;
  const double in = gemm_flops(t, d, 3 * d), rest = gemm_flops(t, d, d) + gemm_flops(t, d, ff) + gemm_flops(t, ff, d) +
                                                   heads * (gemm_flops(s, dh, s) + gemm_flops(s, s, dh));
  return training ? train_flops(in, false) + train_flops(rest, true) : in + rest;
}

}  // namespace kiln::bench
