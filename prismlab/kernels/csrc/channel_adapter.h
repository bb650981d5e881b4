// Host-side declarations for prismlab::channel_adapter (torch-dependent; not for .cuh files).
#pragma once

#include <ATen/core/Tensor.h>

#include "check_inputs.h"

namespace prismlab {
namespace ops {
namespace channel_adapter {

// Dtypes of the kernels per backend (checked by check_inputs()).
inline constexpr at::ScalarType kCpuDtypes[] = {at::kFloat, at::kDouble};
inline constexpr at::ScalarType kCudaDtypes[] = {at::kFloat, at::kDouble, at::kBFloat16};

at::Tensor forward_cpu(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias);

} // namespace channel_adapter
} // namespace ops
} // namespace prismlab
