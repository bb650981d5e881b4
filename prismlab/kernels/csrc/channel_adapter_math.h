// Per-pixel math of the channel adapter, shared by the CPU kernel and the CUDA kernel.
//
// Torch-free on purpose: it is included from .cpp files (plain C++) and from .cuh kernel
// bodies (nvcc). `scalar_t` is the storage type (float, double, c10::BFloat16, ...) and
// `acc_t` the accumulation type (float for float/bfloat16, double for double); the only
// requirement on scalar_t is an explicit conversion to acc_t.
//
//   y[n, o, p] = bias[o] + (1 / C_in) * sum_c weight[channel_ids[c], o] * x[n, c, p]
//
// where p runs over the H*W pixels of one image. Layout contract (callers guarantee it):
//   x_pixel   points at x[n, 0, p] of a contiguous [N, C_in, H*W] tensor, so channel c of that
//             pixel is x_pixel[c * channel_stride] with channel_stride == H*W;
//   channel_ids  [C_in] int64, every value in [0, K) and no repeats (validated on the host);
//   weight    contiguous [K, C_out], row-major.
#pragma once

#include <cstdint>

#include "macros.h"

namespace prismlab {
namespace kernels {

// Returns (1 / C_in) * sum_c weight[channel_ids[c], o] * x[n, c, p], without the bias.
// Kept separate from the bias so the fused spatial-attention operator can reuse the
// channel mix and apply its own epilogue.
template <typename acc_t, typename scalar_t>
PRISMLAB_INLINE acc_t channel_adapter_mix(
    const scalar_t* PRISMLAB_RESTRICT x_pixel,
    int64_t channel_stride,
    const int64_t* PRISMLAB_RESTRICT channel_ids,
    const scalar_t* PRISMLAB_RESTRICT weight,
    int64_t c_in,
    int64_t c_out,
    int64_t o,
    acc_t inv_c_in) {
  acc_t acc = acc_t(0);
  for (int64_t c = 0; c < c_in; ++c) {
    const acc_t w = static_cast<acc_t>(weight[channel_ids[c] * c_out + o]);
    const acc_t v = static_cast<acc_t>(x_pixel[c * channel_stride]);
    acc += w * v;
  }
  return acc * inv_c_in;
}

// One output element y[n, o, p]: channel mix plus bias, in the accumulation type.
template <typename acc_t, typename scalar_t>
PRISMLAB_INLINE acc_t channel_adapter_pixel(
    const scalar_t* PRISMLAB_RESTRICT x_pixel,
    int64_t channel_stride,
    const int64_t* PRISMLAB_RESTRICT channel_ids,
    const scalar_t* PRISMLAB_RESTRICT weight,
    acc_t bias_o,
    int64_t c_in,
    int64_t c_out,
    int64_t o,
    acc_t inv_c_in) {
  return bias_o +
      channel_adapter_mix<acc_t>(
             x_pixel, channel_stride, channel_ids, weight, c_in, c_out, o, inv_c_in);
}

} // namespace kernels
} // namespace prismlab
