#pragma once
// float32 2-D convolutions through oneDNN, forward and both backward passes, for the CPU conv
// kernels (kernels/cpu/conv.cpp, conv_backward.cpp). Each primitive is created once per shape
// (cached) in layouts of oneDNN's choosing where that pays (format_tag::any: its blocked direct
// kernels, jit:avx2 and up, instead of the im2col + gemm implementation that plain NCHW / OIHW
// buffers force), with reorders from and to the caller's plain buffers around it.
#include "kernels/cpu/conv.h"

namespace kiln::cpu::onednn {

enum class ConvPass {
  Forward,          // a = src [N, C, H, W], b = weights, bias (or null) -> out = dst [N, O, oH, oW]
  BackwardData,     // a = weights, b = diff_dst -> out = diff_src
  BackwardWeights,  // a = src, b = diff_dst -> out = diff_weights [O, C / groups, kH, kW]
};

// Every buffer float32, contiguous, in the plain layouts above. Thread-safe: each call brings its
// own scratchpad and reorder buffers.
void run_conv(ConvPass pass, const Conv2dParams& p, const void* a, const void* b, const void* bias, void* out);

}  // namespace kiln::cpu::onednn
