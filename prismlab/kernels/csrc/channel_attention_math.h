// Per-pixel math of prismlab::channel_attention (channel adapter + CBAM spatial attention),
// shared by the CPU kernels and the CUDA kernels (and the SIMT test harness, which compiles
// the CUDA kernel bodies with g++). Torch-free on purpose.
//
//   y[n,o,p] = bias[o] + sum_c wsel[c,o] * x[n,c,p],  wsel[c,o] = weight[ids[c],o] / C_in
//   P[n,:,p] = (mean_o y[n,o,p], max_o y[n,o,p])      pooled map, order [mean, max]
//   a[n,p]   = conv2d(P, w7, padding=3)[n,0,p];  s = sigmoid(a);  out = y * s
//
// Conventions: `acc_t` is the accumulation type (float, or double for double inputs);
// pooled maps and their gradients are stored zero-padded by kAttnPad on every side, so a 7x7
// window never needs a bounds check; w7 holds 2 * 49 values, mean kernel first.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "macros.h"

namespace prismlab {
namespace kernels {

constexpr int kAttnKernel = 7;
constexpr int kAttnPad = 3;
constexpr int kAttnTaps = kAttnKernel * kAttnKernel;

template <typename acc_t>
PRISMLAB_INLINE acc_t sigmoid(acc_t a) {
#if defined(__CUDA_ARCH__)
  return acc_t(1) / (acc_t(1) + exp(-a));
#else
  return acc_t(1) / (acc_t(1) + std::exp(-a));
#endif
}

// y of one pixel and output channel o. x_pix[c * x_stride] is input channel c of the pixel
// (a register array with stride 1 on the GPU, the NCHW image with stride H*W on the CPU);
// wsel_o points at wsel[0, o] of a [c_in, c_out] table. kCIn > 0 fixes C_in at compile time
// (fully unrolled: per-thread inputs stay in registers); kCIn == 0 loops over c_in.
template <int kCIn, typename acc_t, typename x_t>
PRISMLAB_INLINE acc_t adapter_y(
    const x_t* PRISMLAB_RESTRICT x_pix,
    int64_t x_stride,
    const acc_t* PRISMLAB_RESTRICT wsel_o,
    int64_t c_out,
    int c_in,
    acc_t bias_o) {
  acc_t y = bias_o;
  if constexpr (kCIn > 0) {
#pragma unroll
    for (int c = 0; c < kCIn; ++c) {
      y += wsel_o[c * c_out] * static_cast<acc_t>(x_pix[c * x_stride]);
    }
  } else {
    for (int c = 0; c < c_in; ++c) {
      y += wsel_o[c * c_out] * static_cast<acc_t>(x_pix[c * x_stride]);
    }
  }
  return y;
}

// Pre-sigmoid attention logit of one pixel: the 7x7 correlation of the padded pooled maps.
// mean_win / max_win point at the window's top-left element, `pitch` is the maps' row pitch.
template <typename acc_t>
PRISMLAB_INLINE acc_t attn_logit(
    const acc_t* PRISMLAB_RESTRICT mean_win,
    const acc_t* PRISMLAB_RESTRICT max_win,
    int64_t pitch,
    const acc_t* PRISMLAB_RESTRICT w7) {
  acc_t a = acc_t(0);
#pragma unroll
  for (int i = 0; i < kAttnKernel; ++i) {
#pragma unroll
    for (int j = 0; j < kAttnKernel; ++j) {
      a += w7[i * kAttnKernel + j] * mean_win[i * pitch + j] +
          w7[kAttnTaps + i * kAttnKernel + j] * max_win[i * pitch + j];
    }
  }
  return a;
}

// Gradient reaching one pooled value from the logit gradients around it (the transposed
// 7x7 convolution): sum_{i,j} w7_map[6-i, 6-j] * da_win[i, j], with da_win the padded
// logit-gradient window centred on the pixel and w7_map one 49-tap kernel.
template <typename acc_t>
PRISMLAB_INLINE acc_t attn_pooled_grad(
    const acc_t* PRISMLAB_RESTRICT da_win,
    int64_t pitch,
    const acc_t* PRISMLAB_RESTRICT w7_map) {
  acc_t g = acc_t(0);
#pragma unroll
  for (int i = 0; i < kAttnKernel; ++i) {
#pragma unroll
    for (int j = 0; j < kAttnKernel; ++j) {
      g += w7_map[kAttnTaps - 1 - (i * kAttnKernel + j)] * da_win[i * pitch + j];
    }
  }
  return g;
}

// Gradient of the logit a from ds = dL/ds = sum_o dout[o] * y[o] + grad_s.
template <typename acc_t>
PRISMLAB_INLINE acc_t attn_logit_grad(acc_t ds, acc_t s) {
  return ds * s * (acc_t(1) - s);
}

// dL/dy[o] of one pixel: through out = y * s, through the mean (dmean already divided by
// C_out) and through the max, which sends its gradient to the first maximal channel only.
template <typename acc_t, typename index_t>
PRISMLAB_INLINE acc_t adapter_output_grad(
    acc_t dout, acc_t s, acc_t dmean, acc_t dmax, index_t o, index_t argmax) {
  return dout * s + dmean + (o == argmax ? dmax : acc_t(0));
}

// Calls f(std::integral_constant<int, kCIn>{}) with kCIn = c_in for 1..4, else 0 (generic).
template <typename F>
inline void dispatch_c_in(int64_t c_in, F&& f) {
  switch (c_in) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    default:
      return f(std::integral_constant<int, 0>{});
  }
}

} // namespace kernels
} // namespace prismlab
