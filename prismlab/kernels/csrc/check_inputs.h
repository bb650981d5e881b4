// The one place where user inputs of prismlab's ops are validated, for every backend.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace prismlab {
namespace ops {

// Problem sizes of one call; x is [n, c_in, h, w], weight [k, c_out].
struct Shape {
  int64_t n;
  int64_t c_in;
  int64_t h;
  int64_t w;
  int64_t k;
  int64_t c_out;
};

// Raises a one-line c10::Error (RuntimeError in Python) prefixed with `op` and naming the
// offending argument on: wrong rank, a dtype outside `dtypes` or mismatched dtypes, tensors on
// different devices, C_in != channel_ids.numel(), channel_ids out of [0, K) or repeated,
// bias/weight size mismatch, and (when given) attn_weight not [1, 2, 7, 7]. For CUDA inputs
// the id checks copy the tiny channel_ids tensor to the host, which synchronizes the stream.
Shape check_inputs(
    const char* op,
    c10::ArrayRef<at::ScalarType> dtypes,
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor* attn_weight = nullptr);

// Checks the gradients and saved attention handed to a backward op: grad_out [N, C_out, H, W],
// grad_attention and attention [N, 1, H, W], all of x's dtype and device.
void check_attention_grads(
    const char* op,
    const Shape& s,
    const at::Tensor& x,
    const at::Tensor& grad_out,
    const at::Tensor& grad_attention,
    const at::Tensor& attention);

} // namespace ops
} // namespace prismlab
