// Shared input validation of prismlab's ops (see check_inputs.h).
#include "check_inputs.h"

#include <algorithm>
#include <sstream>
#include <vector>

#include <c10/util/Exception.h>

#include "channel_attention_math.h"

namespace prismlab {
namespace ops {

namespace {

std::string dtype_list(c10::ArrayRef<at::ScalarType> dtypes) {
  std::ostringstream out;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    out << (i ? ", " : "") << dtypes[i];
  }
  return out.str();
}

// Validates the values of channel_ids (range and uniqueness) on the host.
void check_channel_id_values(const char* op, const at::Tensor& channel_ids, int64_t k) {
  const at::Tensor ids = channel_ids.to(at::kCPU).contiguous();
  const int64_t* p = ids.const_data_ptr<int64_t>();
  std::vector<int64_t> first_seen(static_cast<size_t>(k), -1);
  for (int64_t c = 0; c < ids.numel(); ++c) {
    const int64_t id = p[c];
    TORCH_CHECK(
        id >= 0 && id < k, op, ": channel_ids[", c, "] = ", id,
        " is out of range [0, K) with K = weight.size(0) = ", k);
    TORCH_CHECK(
        first_seen[id] < 0, op, ": channel_ids must not repeat, but value ", id,
        " appears at positions ", first_seen[id], " and ", c);
    first_seen[id] = c;
  }
}

} // namespace

Shape check_inputs(
    const char* op,
    c10::ArrayRef<at::ScalarType> dtypes,
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor* attn_weight) {
  TORCH_CHECK(
      x.dim() == 4, op, ": x must be a 4-D tensor [N, C_in, H, W], got shape ", x.sizes());
  TORCH_CHECK(
      channel_ids.dim() == 1, op, ": channel_ids must be a 1-D tensor [C_in], got shape ",
      channel_ids.sizes());
  TORCH_CHECK(
      weight.dim() == 2, op, ": weight must be a 2-D tensor [K, C_out], got shape ",
      weight.sizes());
  TORCH_CHECK(
      bias.dim() == 1, op, ": bias must be a 1-D tensor [C_out], got shape ", bias.sizes());

  TORCH_CHECK(
      channel_ids.scalar_type() == at::kLong, op, ": channel_ids must have dtype int64, got ",
      channel_ids.scalar_type());
  TORCH_CHECK(
      std::find(dtypes.begin(), dtypes.end(), x.scalar_type()) != dtypes.end(), op,
      ": x dtype ", x.scalar_type(), " is not supported on ", x.device().type(),
      " (supported: ", dtype_list(dtypes), ")");
  TORCH_CHECK(
      weight.scalar_type() == x.scalar_type() && bias.scalar_type() == x.scalar_type(), op,
      ": dtype mismatch: x is ", x.scalar_type(), ", weight is ", weight.scalar_type(),
      ", bias is ", bias.scalar_type(), " (all must match)");
  TORCH_CHECK(
      channel_ids.device() == x.device() && weight.device() == x.device() &&
          bias.device() == x.device(),
      op, ": device mismatch: x is on ", x.device(), ", channel_ids on ", channel_ids.device(),
      ", weight on ", weight.device(), ", bias on ", bias.device(),
      " (all must be on the same device)");

  const Shape s{x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), weight.size(1)};
  TORCH_CHECK(s.c_in >= 1, op, ": x must have at least one channel (C_in >= 1)");
  TORCH_CHECK(
      channel_ids.size(0) == s.c_in, op, ": channel_ids has ", channel_ids.size(0),
      " entries but x has C_in = ", s.c_in, " channels (x.size(1))");
  TORCH_CHECK(
      bias.size(0) == s.c_out, op, ": bias has ", bias.size(0),
      " entries but weight has C_out = ", s.c_out, " columns (weight.size(1))");
  if (attn_weight != nullptr) {
    TORCH_CHECK(s.c_out >= 1, op, ": weight must have at least one column (C_out >= 1)");
    constexpr int64_t k = kernels::kAttnKernel;
    TORCH_CHECK(
        attn_weight->sizes() == at::IntArrayRef({1, 2, k, k}), op,
        ": attn_weight must have shape [1, 2, ", k, ", ", k, "], got ", attn_weight->sizes());
    TORCH_CHECK(
        attn_weight->scalar_type() == x.scalar_type(), op, ": dtype mismatch: x is ",
        x.scalar_type(), ", attn_weight is ", attn_weight->scalar_type(), " (all must match)");
    TORCH_CHECK(
        attn_weight->device() == x.device(), op, ": device mismatch: x is on ", x.device(),
        ", attn_weight on ", attn_weight->device(), " (all must be on the same device)");
  }
  check_channel_id_values(op, channel_ids, s.k);
  return s;
}

void check_attention_grads(
    const char* op,
    const Shape& s,
    const at::Tensor& x,
    const at::Tensor& grad_out,
    const at::Tensor& grad_attention,
    const at::Tensor& attention) {
  const auto check = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    TORCH_CHECK(
        t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(
        t.scalar_type() == x.scalar_type() && t.device() == x.device(), op, ": ", name,
        " must be ", x.scalar_type(), " on ", x.device(), ", got ", t.scalar_type(), " on ",
        t.device());
  };
  check(grad_out, "grad_out", {s.n, s.c_out, s.h, s.w});
  check(grad_attention, "grad_attention", {s.n, 1, s.h, s.w});
  check(attention, "attention", {s.n, 1, s.h, s.w});
}

} // namespace ops
} // namespace prismlab
