// Host-side declarations for prismlab::channel_adapter (torch-dependent; not for .cuh files).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace prismlab {
namespace ops {
namespace channel_adapter {

// Problem sizes of one call; x is [n, c_in, h, w], weight [k, c_out].
struct Shape {
  int64_t n;
  int64_t c_in;
  int64_t h;
  int64_t w;
  int64_t k;
  int64_t c_out;
};

// The single place where user inputs are validated, for every backend. Raises a one-line
// c10::Error (RuntimeError in Python) naming the offending argument on: wrong rank, wrong or
// mismatched dtype, tensors on different devices, C_in != channel_ids.numel(), channel_ids
// out of [0, K) or repeated, bias/weight size mismatch. `allow_bfloat16` is true for
// backends with a bfloat16 kernel (CUDA). For CUDA inputs the id checks copy the (tiny)
// channel_ids tensor to the host, which synchronizes the current stream.
Shape check_inputs(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    bool allow_bfloat16);

at::Tensor forward_cpu(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias);

} // namespace channel_adapter
} // namespace ops
} // namespace prismlab
