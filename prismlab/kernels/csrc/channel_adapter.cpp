// prismlab::channel_adapter: shared input checks and the CPU kernel.
#include "channel_adapter.h"

#include <algorithm>
#include <vector>

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

bool is_supported_dtype(at::ScalarType t, bool allow_bfloat16) {
  return t == at::kFloat || t == at::kDouble || (allow_bfloat16 && t == at::kBFloat16);
}

// Validates the values of channel_ids (range and uniqueness) on the host.
void check_channel_id_values(const at::Tensor& channel_ids, int64_t k) {
  // Tiny tensor ([C_in]); for CUDA inputs this is a synchronizing device-to-host copy.
  const at::Tensor ids = channel_ids.to(at::kCPU).contiguous();
  const int64_t* p = ids.const_data_ptr<int64_t>();
  std::vector<int64_t> first_seen(static_cast<size_t>(k), -1);
  for (int64_t c = 0; c < ids.numel(); ++c) {
    const int64_t id = p[c];
    TORCH_CHECK(
        id >= 0 && id < k,
        "channel_adapter: channel_ids[", c, "] = ", id,
        " is out of range [0, K) with K = weight.size(0) = ", k);
    TORCH_CHECK(
        first_seen[id] < 0,
        "channel_adapter: channel_ids must not repeat, but value ", id,
        " appears at positions ", first_seen[id], " and ", c);
    first_seen[id] = c;
  }
}

} // namespace

Shape check_inputs(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    bool allow_bfloat16) {
  TORCH_CHECK(
      x.dim() == 4, "channel_adapter: x must be a 4-D tensor [N, C_in, H, W], got shape ",
      x.sizes());
  TORCH_CHECK(
      channel_ids.dim() == 1, "channel_adapter: channel_ids must be a 1-D tensor [C_in], got shape ",
      channel_ids.sizes());
  TORCH_CHECK(
      weight.dim() == 2, "channel_adapter: weight must be a 2-D tensor [K, C_out], got shape ",
      weight.sizes());
  TORCH_CHECK(
      bias.dim() == 1, "channel_adapter: bias must be a 1-D tensor [C_out], got shape ",
      bias.sizes());

  TORCH_CHECK(
      channel_ids.scalar_type() == at::kLong,
      "channel_adapter: channel_ids must have dtype int64, got ", channel_ids.scalar_type());
  TORCH_CHECK(
      is_supported_dtype(x.scalar_type(), allow_bfloat16),
      "channel_adapter: x dtype ", x.scalar_type(), " is not supported on ", x.device().type(),
      " (supported: float32, float64", allow_bfloat16 ? ", bfloat16)" : ")");
  TORCH_CHECK(
      weight.scalar_type() == x.scalar_type() && bias.scalar_type() == x.scalar_type(),
      "channel_adapter: dtype mismatch: x is ", x.scalar_type(), ", weight is ",
      weight.scalar_type(), ", bias is ", bias.scalar_type(), " (all must match)");

  TORCH_CHECK(
      channel_ids.device() == x.device() && weight.device() == x.device() &&
          bias.device() == x.device(),
      "channel_adapter: device mismatch: x is on ", x.device(), ", channel_ids on ",
      channel_ids.device(), ", weight on ", weight.device(), ", bias on ", bias.device(),
      " (all must be on the same device)");

  const Shape s{x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), weight.size(1)};
  TORCH_CHECK(s.c_in >= 1, "channel_adapter: x must have at least one channel (C_in >= 1)");
  TORCH_CHECK(
      channel_ids.size(0) == s.c_in, "channel_adapter: channel_ids has ", channel_ids.size(0),
      " entries but x has C_in = ", s.c_in, " channels (x.size(1))");
  TORCH_CHECK(
      bias.size(0) == s.c_out, "channel_adapter: bias has ", bias.size(0),
      " entries but weight has C_out = ", s.c_out, " columns (weight.size(1))");
  check_channel_id_values(channel_ids, s.k);
  return s;
}

at::Tensor forward_cpu(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias) {
  const Shape s = check_inputs(x, channel_ids, weight, bias, /*allow_bfloat16=*/false);
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
