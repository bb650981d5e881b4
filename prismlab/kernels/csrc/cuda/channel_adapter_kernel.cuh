// CUDA kernel body of prismlab::channel_adapter. Torch-free: it only needs the shared
// per-pixel math, so it can be unit-compiled, reused by the fused adapter + spatial-attention
// kernel, and inspected with `nvcc -Xptxas -v` on its own.
#pragma once

#include <cstdint>

#include "../channel_adapter_math.h"

namespace prismlab {
namespace kernels {
namespace cuda {

constexpr int kChannelAdapterThreads = 256;

// Grid: x covers the H*W pixels of one output plane, y covers the N*C_out output planes;
// both are grid-stride loops, so any grid size is correct. Threads of a warp share (n, o)
// and read consecutive pixels: x loads and y stores are coalesced, weight / channel_ids
// loads are warp-uniform broadcasts.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kChannelAdapterThreads) channel_adapter_forward_kernel(
    const scalar_t* PRISMLAB_RESTRICT x, // [N, C_in, H*W] contiguous
    const int64_t* PRISMLAB_RESTRICT channel_ids, // [C_in]
    const scalar_t* PRISMLAB_RESTRICT weight, // [K, C_out] contiguous
    const scalar_t* PRISMLAB_RESTRICT bias, // [C_out]
    scalar_t* PRISMLAB_RESTRICT y, // [N, C_out, H*W] contiguous
    int64_t planes, // N * C_out
    int64_t c_in,
    int64_t c_out,
    int64_t hw,
    acc_t inv_c_in) {
  const int64_t pixel_stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int64_t n = plane / c_out;
    const int64_t o = plane - n * c_out;
    const scalar_t* x_img = x + n * c_in * hw;
    scalar_t* y_plane = y + plane * hw;
    const acc_t bias_o = static_cast<acc_t>(bias[o]);
    for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < hw;
         p += pixel_stride) {
      y_plane[p] = static_cast<scalar_t>(channel_adapter_pixel<acc_t>(
          x_img + p, hw, channel_ids, weight, bias_o, c_in, c_out, o, inv_c_in));
    }
  }
}

} // namespace cuda
} // namespace kernels
} // namespace prismlab
