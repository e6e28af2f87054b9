#pragma once
// One registration function per op family, each in autograd/vjp_<family>.cpp.
#include "autograd/vjp.h"

namespace kiln::autograd {
void register_pointwise_vjps(OpRegistry& r);  // also copy
void register_view_vjps(OpRegistry& r);
void register_reduction_vjps(OpRegistry& r);
void register_linalg_vjps(OpRegistry& r);
void register_conv_vjps(OpRegistry& r);   // conv2d, max_pool2d, avg_pool2d
void register_index_vjps(OpRegistry& r);  // cat, index_select, gather, scatter, embedding, tril/triu
void register_nn_vjps(OpRegistry& r);     // layer_norm, dropout, losses

// Sets a row's vjp and what it saves.
inline void set_vjp(OpRegistry& r, std::string_view name, VjpFn fn, uint8_t saves = kSaveAll) {
  OpDef& d = r.mutable_get(name);
  d.vjp = fn;
  d.vjp_saves = saves;
}
}  // namespace kiln::autograd
