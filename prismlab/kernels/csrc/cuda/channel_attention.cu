// prismlab::channel_attention: CUDA launches and registration. Kernel bodies:
// channel_attention_kernel.cuh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../channel_attention.h"
#include "channel_attention_kernel.cuh"

// The kernels' dtypes (kCudaDtypes); both accumulate in float32.
#define PRISMLAB_DISPATCH_FLOAT_BF16(TYPE, NAME, ...) \
  AT_DISPATCH_SWITCH(                                 \
      TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace prismlab {
namespace ops {
namespace channel_attention {

namespace {

namespace k = kernels::cuda;

// Shared memory a block may use without opting in to more (all CUDA GPUs).
constexpr size_t kMaxSmem = 48 * 1024;

void check_cuda_limits(const Shape& s, size_t smem_bytes) {
  TORCH_CHECK(
      s.n <= 65535 && s.h <= std::numeric_limits<int>::max() / 2 &&
          s.w <= std::numeric_limits<int>::max() / 2 && s.c_in * s.c_out <= (1 << 24),
      kOp, ": sizes too large for the CUDA kernels (N <= 65535, H and W < 2^30, "
      "C_in * C_out <= 2^24), got ", "N = ", s.n, ", H = ", s.h, ", W = ", s.w);
  TORCH_CHECK(
      smem_bytes <= kMaxSmem, kOp, ": C_in = ", s.c_in, ", C_out = ", s.c_out,
      " need ", smem_bytes, " bytes of shared memory per block, more than the CUDA kernels' ",
      kMaxSmem, "; reduce C_out");
}

} // namespace

std::tuple<at::Tensor, at::Tensor> forward_cuda(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor& attn_weight) {
  const Shape s = check_inputs(kOp, kCudaDtypes, x, channel_ids, weight, bias, &attn_weight);
  TORCH_INTERNAL_ASSERT(x.is_cuda());
  const c10::cuda::CUDAGuard device_guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor ids = channel_ids.contiguous();
  const at::Tensor wc = weight.contiguous();
  const at::Tensor bc = bias.contiguous();
  const at::Tensor w7c = attn_weight.contiguous();
  at::Tensor out = at::empty({s.n, s.c_out, s.h, s.w}, xc.options());
  at::Tensor attn = at::empty({s.n, 1, s.h, s.w}, xc.options());
  if (out.numel() == 0) {
    return {out, attn};
  }
  const int c_in = static_cast<int>(s.c_in), c_out = static_cast<int>(s.c_out);
  const size_t smem = k::forward_smem_bytes<float>(c_in, c_out);
  check_cuda_limits(s, smem);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  PRISMLAB_DISPATCH_FLOAT_BF16(xc.scalar_type(), "channel_attention_cuda", [&] {
    kernels::dispatch_c_in(s.c_in, [&](auto c) {
      k::channel_attention_forward_kernel<decltype(c)::value, scalar_t, float>
          <<<k::tile_grid(s.n, s.h, s.w), k::kThreads, smem, stream>>>(
              xc.const_data_ptr<scalar_t>(), ids.const_data_ptr<int64_t>(),
              wc.const_data_ptr<scalar_t>(), bc.const_data_ptr<scalar_t>(),
              w7c.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
              attn.mutable_data_ptr<scalar_t>(), c_in, c_out, static_cast<int>(s.h),
              static_cast<int>(s.w), 1.0f / c_in, 1.0f / c_out);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {out, attn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out,
    const at::Tensor& grad_attention,
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor& attn_weight,
    const at::Tensor& attention) {
  const Shape s = check_inputs(kOp, kCudaDtypes, x, channel_ids, weight, bias, &attn_weight);
  check_attention_grads(kOp, s, x, grad_out, grad_attention, attention);
  TORCH_INTERNAL_ASSERT(x.is_cuda());
  const c10::cuda::CUDAGuard device_guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor ids = channel_ids.contiguous();
  const at::Tensor wc = weight.contiguous();
  const at::Tensor bc = bias.contiguous();
  const at::Tensor w7c = attn_weight.contiguous();
  const at::Tensor g = grad_out.contiguous();
  const at::Tensor gs = grad_attention.contiguous();
  const at::Tensor sc = attention.contiguous();
  at::Tensor dx = at::empty({s.n, s.c_in, s.h, s.w}, xc.options());
  // Float accumulators [dwsel (c_in x c_out) | db (c_out) | dw7 (98)], summed over blocks.
  at::Tensor acc = at::zeros({(s.c_in + 1) * s.c_out + 2 * kernels::kAttnTaps}, xc.options().dtype(at::kFloat));
  const int64_t hw = s.h * s.w;
  if (dx.numel() != 0) {
    const int c_in = static_cast<int>(s.c_in), c_out = static_cast<int>(s.c_out);
    const size_t smem_pool = k::backward_pool_smem_bytes<float>(c_in, c_out);
    const size_t smem = k::backward_smem_bytes<float>(c_in, c_out);
    check_cuda_limits(s, std::max(smem, smem_pool));
    at::Tensor pooled = at::empty({s.n, 2, s.h, s.w}, xc.options().dtype(at::kFloat));
    at::Tensor dlogit = at::empty({s.n, s.h, s.w}, xc.options().dtype(at::kFloat));
    at::Tensor argmax = at::empty({s.n, s.h, s.w}, xc.options().dtype(at::kInt));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    PRISMLAB_DISPATCH_FLOAT_BF16(xc.scalar_type(), "channel_attention_backward_cuda", [&] {
      kernels::dispatch_c_in(s.c_in, [&](auto c) {
        constexpr int kCIn = decltype(c)::value;
        k::channel_attention_backward_pool_kernel<kCIn, scalar_t, float>
            <<<k::pool_grid(s.n, hw, 1024), k::kPoolThreads, smem_pool, stream>>>(
                xc.const_data_ptr<scalar_t>(), ids.const_data_ptr<int64_t>(),
                wc.const_data_ptr<scalar_t>(), bc.const_data_ptr<scalar_t>(),
                g.const_data_ptr<scalar_t>(), gs.const_data_ptr<scalar_t>(),
                sc.const_data_ptr<scalar_t>(), pooled.mutable_data_ptr<float>(),
                dlogit.mutable_data_ptr<float>(), argmax.mutable_data_ptr<int32_t>(), c_in, c_out,
                hw, 1.0f / c_in, 1.0f / c_out);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        k::channel_attention_backward_kernel<kCIn, scalar_t, float>
            <<<k::tile_grid(s.n, s.h, s.w), k::kThreads, smem, stream>>>(
                xc.const_data_ptr<scalar_t>(), ids.const_data_ptr<int64_t>(),
                wc.const_data_ptr<scalar_t>(), w7c.const_data_ptr<scalar_t>(),
                g.const_data_ptr<scalar_t>(), sc.const_data_ptr<scalar_t>(),
                pooled.const_data_ptr<float>(), dlogit.const_data_ptr<float>(),
                argmax.const_data_ptr<int32_t>(), dx.mutable_data_ptr<scalar_t>(),
                acc.mutable_data_ptr<float>(), c_in, c_out, static_cast<int>(s.h),
                static_cast<int>(s.w), 1.0f / c_in, 1.0f / c_out);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  // dW rows of the channels present (ids are unique), scaled by d(wsel)/d(W) = 1 / C_in;
  // rows of absent channels stay zero.
  const at::Tensor dwsel = acc.narrow(0, 0, s.c_in * s.c_out).view({s.c_in, s.c_out});
  at::Tensor dweight = at::zeros({s.k, s.c_out}, xc.options());
  dweight.index_copy_(0, ids, dwsel.mul(1.0 / static_cast<double>(s.c_in)).to(xc.scalar_type()));
  at::Tensor dbias = acc.narrow(0, s.c_in * s.c_out, s.c_out).to(xc.scalar_type());
  at::Tensor dw7 = acc.narrow(0, (s.c_in + 1) * s.c_out, 2 * kernels::kAttnTaps)
                       .view({1, 2, kernels::kAttnKernel, kernels::kAttnKernel})
                       .to(xc.scalar_type());
  return {dx, dweight, dbias, dw7};
}

} // namespace channel_attention
} // namespace ops
} // namespace prismlab

TORCH_LIBRARY_IMPL(prismlab, CUDA, m) {
  m.impl("channel_attention", &prismlab::ops::channel_attention::forward_cuda);
  m.impl("channel_attention_backward", &prismlab::ops::channel_attention::backward_cuda);
}
