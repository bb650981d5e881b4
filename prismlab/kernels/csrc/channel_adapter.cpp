// prismlab::channel_adapter: the CPU kernel.
#include "channel_adapter.h"

#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/TensorBase.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "channel_adapter_math.h"

namespace prismlab {
namespace ops {
namespace channel_adapter {

namespace {

// Minimum multiply-adds per at::parallel_for task (same value as kGrainSize).
constexpr int64_t kGrainSize = 32768;

} // namespace

at::Tensor forward_cpu(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias) {
  const Shape s = check_inputs("channel_adapter", kCpuDtypes, x, channel_ids, weight, bias);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());

  // The shared per-pixel math assumes contiguous NCHW x, [K, C_out] weight and dense ids.
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
  // Each task is one output plane y[n, o, :, :] costing hw * c_in multiply-adds.
  const int64_t grain = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(1, hw * s.c_in));

  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "prismlab_channel_adapter_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x_ptr = xc.const_data_ptr<scalar_t>();
    const int64_t* ids_ptr = ids.const_data_ptr<int64_t>();
    const scalar_t* w_ptr = wc.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = bc.const_data_ptr<scalar_t>();
    scalar_t* y_ptr = y.mutable_data_ptr<scalar_t>();
    const acc_t inv_c_in = acc_t(1) / static_cast<acc_t>(s.c_in);

    at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / s.c_out;
        const int64_t o = plane % s.c_out;
        const scalar_t* x_img = x_ptr + n * s.c_in * hw;
        scalar_t* y_plane = y_ptr + plane * hw;
        const acc_t bias_o = static_cast<acc_t>(b_ptr[o]);
        for (int64_t p = 0; p < hw; ++p) {
          y_plane[p] = static_cast<scalar_t>(kernels::channel_adapter_pixel<acc_t>(
              x_img + p, hw, ids_ptr, w_ptr, bias_o, s.c_in, s.c_out, o, inv_c_in));
        }
      }
    });
  });
  return y;
}

} // namespace channel_adapter
} // namespace ops
} // namespace prismlab

TORCH_LIBRARY_IMPL(prismlab, CPU, m) {
  m.impl("channel_adapter", &prismlab::ops::channel_adapter::forward_cpu);
}
