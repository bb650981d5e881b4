// Host-side declarations for prismlab::channel_attention (torch-dependent; not for .cuh files).
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>

#include "check_inputs.h"

namespace prismlab {
namespace ops {
namespace channel_attention {

inline constexpr const char* kOp = "channel_attention";
inline constexpr at::ScalarType kCpuDtypes[] = {at::kFloat, at::kDouble};
inline constexpr at::ScalarType kCudaDtypes[] = {at::kFloat, at::kBFloat16};

// Returns (out [N, C_out, H, W], attention s [N, 1, H, W]), both contiguous.
std::tuple<at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor& attn_weight);

// Returns (grad_x, grad_weight, grad_bias, grad_attn_weight) from the gradients of both
// outputs of forward; y, the pooled map and the logits are recomputed from x.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out,
    const at::Tensor& grad_attention,
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor& attn_weight,
    const at::Tensor& attention);

} // namespace channel_attention
} // namespace ops
} // namespace prismlab
