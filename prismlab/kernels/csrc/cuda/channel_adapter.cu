// prismlab::channel_adapter: CUDA kernel launch and registration (float32, float64, bfloat16;
// bfloat16 accumulates in float32).
#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../channel_adapter.h"
#include "channel_adapter_kernel.cuh"

namespace prismlab {
namespace ops {
namespace channel_adapter {

at::Tensor forward_cuda(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias) {
  const Shape s = check_inputs("channel_adapter", kCudaDtypes, x, channel_ids, weight, bias);
  TORCH_INTERNAL_ASSERT(x.is_cuda());
  const c10::cuda::CUDAGuard device_guard(x.device());

  const at::Tensor xc = x.contiguous();
  const at::Tensor ids = channel_ids.contiguous();
  const at::Tensor wc = weight.contiguous();
  const at::Tensor bc = bias.contiguous();
  at::Tensor y = at::empty({s.n, s.c_out, s.h, s.w}, xc.options());
  if (y.numel() == 0) {
    return y;
  }

  const int64_t hw = s.h * s.w;
  const int64_t planes = s.n * s.c_out;
  constexpr int threads = kernels::cuda::kChannelAdapterThreads;
  // Both grid dimensions are grid-stride loops in the kernel, so capping them is safe.
  const int64_t blocks_x = std::min<int64_t>((hw + threads - 1) / threads, 1024);
  const int64_t blocks_y = std::min<int64_t>(planes, 65535);
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND(
      at::kBFloat16, xc.scalar_type(), "prismlab_channel_adapter_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        kernels::cuda::channel_adapter_forward_kernel<scalar_t, acc_t>
            <<<grid, threads, 0, stream>>>(
                xc.const_data_ptr<scalar_t>(),
                ids.const_data_ptr<int64_t>(),
                wc.const_data_ptr<scalar_t>(),
                bc.const_data_ptr<scalar_t>(),
                y.mutable_data_ptr<scalar_t>(),
                planes,
                s.c_in,
                s.c_out,
                hw,
                acc_t(1) / static_cast<acc_t>(s.c_in));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return y;
}

} // namespace channel_adapter
} // namespace ops
} // namespace prismlab

TORCH_LIBRARY_IMPL(prismlab, CUDA, m) {
  m.impl("channel_adapter", &prismlab::ops::channel_adapter::forward_cuda);
}
