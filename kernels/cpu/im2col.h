#pragma once
// im2col and its adjoint col2im for the float64 convolution paths (kernels/cpu/conv.cpp,
// kernels/cpu/conv_backward.cpp), over the Cg channel planes of one image and group.
#include <cstdint>

#include "kernels/cpu/conv.h"

namespace kiln::cpu {

// col[(c * kH + i) * kW + j, oh * oW + ow] holds
// x[c, oh * sH - pH + i * dH, ow * sW - pW + j * dW] (0 outside).
template <class T>
void im2col(const T* x, int64_t Cg, const Conv2dParams& p, T* col) {
  const int64_t L = p.oH * p.oW;
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < p.kH; ++i)
      for (int64_t j = 0; j < p.kW; ++j) {
        T* __restrict dst = col + ((c * p.kH + i) * p.kW + j) * L;
        const T* plane = x + c * p.H * p.W;
        for (int64_t oh = 0; oh < p.oH; ++oh) {
          const int64_t h = oh * p.sH - p.pH + i * p.dH;
          T* __restrict row = dst + oh * p.oW;
          if (h < 0 || h >= p.H) {
            for (int64_t ow = 0; ow < p.oW; ++ow) row[ow] = T(0);
            continue;
          }
          const T* src = plane + h * p.W;
          for (int64_t ow = 0; ow < p.oW; ++ow) {
            const int64_t w = ow * p.sW - p.pW + j * p.dW;
            row[ow] = (w >= 0 && w < p.W) ? src[w] : T(0);
          }
        }
      }
}

// The adjoint of im2col: x (Cg planes, zeroed by the caller) accumulates every column entry.
template <class T>
void col2im(const T* col, int64_t Cg, const Conv2dParams& p, T* x) {
  const int64_t L = p.oH * p.oW;
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < p.kH; ++i)
      for (int64_t j = 0; j < p.kW; ++j) {
        const T* src = col + ((c * p.kH + i) * p.kW + j) * L;
        T* plane = x + c * p.H * p.W;
        for (int64_t oh = 0; oh < p.oH; ++oh) {
          const int64_t h = oh * p.sH - p.pH + i * p.dH;
          if (h < 0 || h >= p.H) continue;
          T* row = plane + h * p.W;
          const T* s = src + oh * p.oW;
          for (int64_t ow = 0; ow < p.oW; ++ow) {
            const int64_t w = ow * p.sW - p.pW + j * p.dW;
            if (w >= 0 && w < p.W) row[w] += s[ow];
          }
        }
      }
}

}  // namespace kiln::cpu
