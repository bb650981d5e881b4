// prismlab::channel_attention: CPU kernels, forward and backward (float32, float64).
//
// Work is split into bands of image rows with at::parallel_for. Inner loops run along the
// band's pixels (contiguous in NCHW) with C_in fixed at compile time, so they vectorise; the
// functions holding them are PRISMLAB_CPU_MULTIVERSION, so they use the CPU's vector width.
// Two passes each:
//   forward:  pooled map of every row  |  logit, s and out = y * s of every row
//   backward: pooled map, argmax and logit gradient  |  dx, dW, db, dw7
// because the 7x7 stencil of a row needs the first pass of the rows around it. y itself is
// recomputed from x in every pass and never stored.
#include "channel_attention.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "channel_attention_math.h"

namespace prismlab {
namespace ops {
namespace channel_attention {

namespace {

using kernels::kAttnPad;
using kernels::kAttnTaps;

// sum_i a[i] * b[i] over independent lanes, so that the reduction vectorises without
// -ffast-math. Always inlined, so that it is compiled for its multi-versioned caller's ISA.
template <typename acc_t, typename b_t>
[[gnu::always_inline]] inline acc_t lane_dot(const acc_t* PRISMLAB_RESTRICT a, const b_t* PRISMLAB_RESTRICT b, int64_t n) {
  constexpr int kLanes = 16;
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      lane[l] += a[i + l] * static_cast<acc_t>(b[i + l]);
    }
  }
  acc_t sum = acc_t(0);
  for (; i < n; ++i) {
    sum += a[i] * static_cast<acc_t>(b[i]);
  }
  for (int l = 0; l < kLanes; ++l) {
    sum += lane[l];
  }
  return sum;
}

template <typename acc_t>
[[gnu::always_inline]] inline acc_t lane_sum(const acc_t* PRISMLAB_RESTRICT a, int64_t n) {
  constexpr int kLanes = 16;
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      lane[l] += a[i + l];
    }
  }
  acc_t sum = acc_t(0);
  for (; i < n; ++i) {
    sum += a[i];
  }
  for (int l = 0; l < kLanes; ++l) {
    sum += lane[l];
  }
  return sum;
}

// One tap of a row stencil: out0[w] += a0 * in0[w] + b0 * in1[w] and, when out1 is given,
// out1[w] += a1 * in0[w]. Out of line on purpose: inlined into the tap loop, GCC's
// unroll-and-jam fuses pairs of taps into a loop it no longer vectorises.
template <typename acc_t>
[[gnu::noinline]] PRISMLAB_CPU_MULTIVERSION void stencil_tap(const acc_t* PRISMLAB_RESTRICT in0,
                                   const acc_t* PRISMLAB_RESTRICT in1, acc_t a0, acc_t b0,
                                   acc_t a1, acc_t* PRISMLAB_RESTRICT out0,
                                   acc_t* PRISMLAB_RESTRICT out1, int64_t n) {
  if (out1 == nullptr) {
    for (int64_t w = 0; w < n; ++w) {
      out0[w] += a0 * in0[w] + b0 * in1[w];
    }
  } else {
    for (int64_t w = 0; w < n; ++w) {
      out0[w] += a0 * in0[w];
      out1[w] += a1 * in0[w];
    }
  }
}

// a[w] = kernels::attn_logit at every pixel of a row of n pixels (mean_win / max_win: the
// padded windows of pixel 0), summed in the same order but tap-major so that it vectorises.
template <typename acc_t>
void stencil_row(const acc_t* mean_win, const acc_t* max_win, int64_t pitch, const acc_t* w7,
                 acc_t* a, int64_t n) {
  std::fill(a, a + n, acc_t(0));
  for (int t = 0; t < kAttnTaps; ++t) {
    const int64_t off = (t / kernels::kAttnKernel) * pitch + t % kernels::kAttnKernel;
    stencil_tap(mean_win + off, max_win + off, w7[t], w7[kAttnTaps + t], acc_t(0), a,
                static_cast<acc_t*>(nullptr), n);
  }
}

// dmean[w] / dmax[w] = kernels::attn_pooled_grad at every pixel of a row (dl_win: the padded
// logit-gradient window of pixel 0; w_flipped: both kernels with their taps reversed), both
// maps in one tap-major sweep.
template <typename acc_t>
void transposed_stencil_row(const acc_t* dl_win, int64_t pitch, const acc_t* w_flipped,
                            acc_t* dmean, acc_t* dmax, int64_t n) {
  std::fill(dmean, dmean + n, acc_t(0));
  std::fill(dmax, dmax + n, acc_t(0));
  for (int t = 0; t < kAttnTaps; ++t) {
    const int64_t off = (t / kernels::kAttnKernel) * pitch + t % kernels::kAttnKernel;
    stencil_tap(dl_win + off, dl_win + off, w_flipped[t], acc_t(0), w_flipped[kAttnTaps + t],
                dmean, dmax, n);
  }
}

constexpr int kDw7Lanes = 16;

// dw7[m, i, j] += sum_w dl_row[w] * pooled_m(h + i - 3, w + j - 3) over a row of n pixels
// (mean_win / max_win: the padded windows of pixel 0, as for stencil_row), into kDw7Lanes
// independent lanes per tap: rows are short, so the lanes are summed once, at the end.
template <typename acc_t>
PRISMLAB_CPU_MULTIVERSION void accumulate_dw7_row(const acc_t* PRISMLAB_RESTRICT dl_row,
                                                  const acc_t* mean_win, const acc_t* max_win,
                                                  int64_t pitch, int64_t n,
                                                  acc_t* PRISMLAB_RESTRICT dw7_lanes) {
  for (int m = 0; m < 2; ++m) {
    const acc_t* win = m == 0 ? mean_win : max_win;
    for (int t = 0; t < kAttnTaps; ++t) {
      const acc_t* PRISMLAB_RESTRICT p =
          win + (t / kernels::kAttnKernel) * pitch + t % kernels::kAttnKernel;
      acc_t* PRISMLAB_RESTRICT lane = dw7_lanes + (m * kAttnTaps + t) * kDw7Lanes;
      int64_t w = 0;
      for (; w + kDw7Lanes <= n; w += kDw7Lanes) {
        for (int l = 0; l < kDw7Lanes; ++l) {
          lane[l] += dl_row[w + l] * p[w + l];
        }
      }
      for (int l = 0; w < n; ++w, ++l) {
        lane[l] += dl_row[w] * p[w];
      }
    }
  }
}

// Parameters converted once to the accumulation type: wsel [c_in, c_out] = W[ids] / C_in.
template <typename acc_t, typename scalar_t>
struct Params {
  std::vector<acc_t> wsel, bias, w7;

  Params(const Shape& s, const at::Tensor& ids, const at::Tensor& weight, const at::Tensor& bias_t,
         const at::Tensor& w7_t)
      : wsel(s.c_in * s.c_out), bias(s.c_out), w7(2 * kAttnTaps) {
    const at::Tensor idc = ids.contiguous();
    const at::Tensor wc = weight.contiguous();
    const at::Tensor bc = bias_t.contiguous();
    const at::Tensor w7c = w7_t.contiguous();
    const int64_t* id = idc.const_data_ptr<int64_t>();
    const scalar_t* wp = wc.const_data_ptr<scalar_t>();
    const acc_t inv_c_in = acc_t(1) / static_cast<acc_t>(s.c_in);
    for (int64_t c = 0; c < s.c_in; ++c) {
      for (int64_t o = 0; o < s.c_out; ++o) {
        wsel[c * s.c_out + o] = static_cast<acc_t>(wp[id[c] * s.c_out + o]) * inv_c_in;
      }
    }
    std::transform(bc.const_data_ptr<scalar_t>(), bc.const_data_ptr<scalar_t>() + s.c_out,
                   bias.begin(), [](scalar_t v) { return static_cast<acc_t>(v); });
    std::transform(w7c.const_data_ptr<scalar_t>(), w7c.const_data_ptr<scalar_t>() + 2 * kAttnTaps,
                   w7.begin(), [](scalar_t v) { return static_cast<acc_t>(v); });
  }
};

// A zeroed buffer from the ATen allocator, so that memory profilers see it.
template <typename acc_t>
struct Workspace {
  at::Tensor t;
  Workspace(int64_t numel, const at::Tensor& like)
      : t(at::zeros({numel}, like.options().dtype(c10::CppTypeToScalarType<acc_t>::value))) {}
  acc_t* data() { return t.mutable_data_ptr<acc_t>(); }
};

// Zero-padded per-image maps: [n, maps, h + 6, w + 6].
struct Padded {
  int64_t hp, wp;
  explicit Padded(const Shape& s) : hp(s.h + 2 * kAttnPad), wp(s.w + 2 * kAttnPad) {}
  int64_t plane() const { return hp * wp; }
  // Offset of unpadded pixel (h, 0) of map `m` of image n in a buffer with `maps` maps.
  int64_t at(int64_t n, int64_t maps, int64_t m, int64_t h) const {
    return (n * maps + m) * plane() + (h + kAttnPad) * wp + kAttnPad;
  }
};

// Column o of wsel for kernels::adapter_y: copied to a local array when C_in is a template
// constant, so that the pixel loops need no aliasing checks (and vectorise).
template <int kCIn, typename acc_t>
struct WselColumn {
  acc_t local[kCIn > 0 ? kCIn : 1];
  const acc_t* ptr;
  int64_t stride;
  WselColumn(const std::vector<acc_t>& wsel, int64_t c_out, int64_t o)
      : ptr(wsel.data() + o), stride(c_out) {
    if constexpr (kCIn > 0) {
      for (int c = 0; c < kCIn; ++c) {
        local[c] = wsel[c * c_out + o];
      }
      ptr = local;
      stride = 1;
    }
  }
};

// A task is a band of whole rows of one image: in NCHW its pixels are contiguous in every
// channel plane, so the per-channel loops stream long runs (short runs of many planes
// defeat the hardware prefetcher).
struct Bands {
  int64_t rows, count;
  explicit Bands(const Shape& s)
      : rows(std::clamp<int64_t>(4096 / std::max<int64_t>(1, s.w), 1, s.h)),
        count(s.n * ((s.h + rows - 1) / rows)) {}
  // Image, first row and end row of band t.
  void get(const Shape& s, int64_t t, int64_t& n, int64_t& h0, int64_t& h1) const {
    const int64_t per_image = (s.h + rows - 1) / rows;
    n = t / per_image;
    h0 = (t % per_image) * rows;
    h1 = std::min(s.h, h0 + rows);
  }
};

// Pooled map (mean, max) of `len` contiguous pixels, and with g also the first argmax (as
// acc_t, exact below 2^24, so the loop vectorises) and sum_o g * y (y_buf: scratch).
template <int kCIn, typename acc_t, typename scalar_t>
PRISMLAB_CPU_MULTIVERSION void pool_pixels(const Shape& s, const Params<acc_t, scalar_t>& prm,
                 const scalar_t* PRISMLAB_RESTRICT x_pix, const scalar_t* PRISMLAB_RESTRICT g_pix,
                 int64_t len, acc_t* PRISMLAB_RESTRICT mean,
                 acc_t* PRISMLAB_RESTRICT max, acc_t* PRISMLAB_RESTRICT argmax,
                 acc_t* PRISMLAB_RESTRICT gy, acc_t* PRISMLAB_RESTRICT y_buf) {
  const int64_t hw = s.h * s.w;
  const int c_in = static_cast<int>(s.c_in);
  std::fill(mean, mean + len, acc_t(0));
  std::fill(max, max + len, -std::numeric_limits<acc_t>::infinity());
  if (g_pix != nullptr) {
    std::fill(gy, gy + len, acc_t(0));
    std::fill(argmax, argmax + len, acc_t(0));
  }
  for (int64_t o = 0; o < s.c_out; ++o) {
    const WselColumn<kCIn, acc_t> col(prm.wsel, s.c_out, o);
    const acc_t b = prm.bias[o];
    if (g_pix == nullptr) {
      for (int64_t p = 0; p < len; ++p) {
        const acc_t y = kernels::adapter_y<kCIn>(x_pix + p, hw, col.ptr, col.stride, c_in, b);
        mean[p] += y;
        max[p] = y > max[p] ? y : max[p];
      }
    } else {
      const scalar_t* PRISMLAB_RESTRICT g_o = g_pix + o * hw;
      const acc_t o_acc = static_cast<acc_t>(o);
      for (int64_t p = 0; p < len; ++p) {
        const acc_t y = kernels::adapter_y<kCIn>(x_pix + p, hw, col.ptr, col.stride, c_in, b);
        mean[p] += y;
        gy[p] += static_cast<acc_t>(g_o[p]) * y;
        y_buf[p] = y;
      }
      // A loop of its own: fused with the one above, GCC no longer vectorises the select.
      for (int64_t p = 0; p < len; ++p) {
        // Strictly greater: ties keep the first maximal channel (the reference's rule).
        const acc_t m = max[p];
        const acc_t mx = y_buf[p] > m ? y_buf[p] : m;
        argmax[p] = mx == m ? argmax[p] : o_acc;
        max[p] = mx;
      }
    }
  }
  const acc_t inv_c_out = acc_t(1) / static_cast<acc_t>(s.c_out);
  for (int64_t p = 0; p < len; ++p) {
    mean[p] *= inv_c_out;
  }
}

// out = y * s of `len` contiguous pixels (x_pix, out_pix: the first pixel in channel 0).
template <int kCIn, typename acc_t, typename scalar_t>
PRISMLAB_CPU_MULTIVERSION void attend_pixels(const Shape& s, const Params<acc_t, scalar_t>& prm,
                                             const scalar_t* PRISMLAB_RESTRICT x_pix,
                                             const acc_t* PRISMLAB_RESTRICT sv, int64_t len,
                                             scalar_t* PRISMLAB_RESTRICT out_pix) {
  const int64_t hw = s.h * s.w;
  const int c_in = static_cast<int>(s.c_in);
  for (int64_t o = 0; o < s.c_out; ++o) {
    const WselColumn<kCIn, acc_t> col(prm.wsel, s.c_out, o);
    const acc_t b = prm.bias[o];
    scalar_t* PRISMLAB_RESTRICT out_o = out_pix + o * hw;
    for (int64_t p = 0; p < len; ++p) {
      out_o[p] = static_cast<scalar_t>(
          kernels::adapter_y<kCIn>(x_pix + p, hw, col.ptr, col.stride, c_in, b) * sv[p]);
    }
  }
}

template <int kCIn, typename scalar_t>
void forward_impl(const Shape& s, const at::Tensor& x, const at::Tensor& ids,
                  const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& w7,
                  at::Tensor& out, at::Tensor& attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const Params<acc_t, scalar_t> prm(s, ids, weight, bias, w7);
  const Padded pad(s);
  const Bands bands(s);
  Workspace<acc_t> pooled(s.n * 2 * pad.plane(), x);
  const int64_t hw = s.h * s.w;
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
  scalar_t* s_ptr = attn.mutable_data_ptr<scalar_t>();

  // Pass 1: pooled map of every pixel.
  at::parallel_for(0, bands.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> mean(bands.rows * s.w), max(bands.rows * s.w);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, h0, h1;
      bands.get(s, t, n, h0, h1);
      pool_pixels<kCIn, acc_t, scalar_t>(s, prm, x_ptr + n * s.c_in * hw + h0 * s.w, nullptr,
                                         (h1 - h0) * s.w, mean.data(), max.data(), nullptr,
                                         nullptr, nullptr);
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t r = (h - h0) * s.w;
        std::copy_n(mean.data() + r, s.w, pooled.data() + pad.at(n, 2, 0, h));
        std::copy_n(max.data() + r, s.w, pooled.data() + pad.at(n, 2, 1, h));
      }
    }
  });
  // Pass 2: s and out = y * s.
  at::parallel_for(0, bands.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sv(bands.rows * s.w);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, h0, h1;
      bands.get(s, t, n, h0, h1);
      const int64_t len = (h1 - h0) * s.w;
      for (int64_t h = h0; h < h1; ++h) {
        // Window of pixel (h, w) starts at padded (h, w): 3 rows / columns up-left of it.
        const acc_t* mean_win = pooled.data() + pad.at(n, 2, 0, h) - kAttnPad * (pad.wp + 1);
        stencil_row(mean_win, mean_win + pad.plane(), pad.wp, prm.w7.data(),
                    sv.data() + (h - h0) * s.w, s.w);
      }
      scalar_t* s_seg = s_ptr + n * hw + h0 * s.w;
      for (int64_t p = 0; p < len; ++p) {
        sv[p] = kernels::sigmoid(sv[p]);
        s_seg[p] = static_cast<scalar_t>(sv[p]);
      }
      attend_pixels<kCIn, acc_t, scalar_t>(s, prm, x_ptr + n * s.c_in * hw + h0 * s.w,
                                           sv.data(), len, out_ptr + n * s.c_out * hw + h0 * s.w);
    }
  });
}

// Gradients of `len` contiguous pixels given their s, pooled-map gradients (dmean already
// divided by C_out) and argmax: dx into dxr ([c_in, cap] scratch), and dwsel / db accumulated.
template <int kCIn, typename acc_t, typename scalar_t>
PRISMLAB_CPU_MULTIVERSION void backprop_pixels(
    const Shape& s, const Params<acc_t, scalar_t>& prm, const scalar_t* PRISMLAB_RESTRICT x_pix,
    const scalar_t* PRISMLAB_RESTRICT g_pix, const acc_t* PRISMLAB_RESTRICT sv,
    const acc_t* PRISMLAB_RESTRICT dmean, const acc_t* PRISMLAB_RESTRICT dmax,
    const acc_t* PRISMLAB_RESTRICT argmax, int64_t len, acc_t* PRISMLAB_RESTRICT dyr,
    acc_t* PRISMLAB_RESTRICT dxr, int64_t cap, acc_t* PRISMLAB_RESTRICT dwsel,
    acc_t* PRISMLAB_RESTRICT db) {
  const int64_t hw = s.h * s.w;
  std::fill(dxr, dxr + s.c_in * cap, acc_t(0));
  for (int64_t o = 0; o < s.c_out; ++o) {
    const scalar_t* PRISMLAB_RESTRICT g_o = g_pix + o * hw;
    const acc_t o_acc = static_cast<acc_t>(o);
    for (int64_t p = 0; p < len; ++p) {
      dyr[p] = kernels::adapter_output_grad(
          static_cast<acc_t>(g_o[p]), sv[p], dmean[p], dmax[p], o_acc, argmax[p]);
    }
    db[o] += lane_sum(dyr, len);
    const WselColumn<kCIn, acc_t> col(prm.wsel, s.c_out, o);
    const int64_t c_in = kCIn > 0 ? kCIn : s.c_in;
    for (int64_t c = 0; c < c_in; ++c) {
      const acc_t wc = col.ptr[c * col.stride];
      acc_t* PRISMLAB_RESTRICT dx_c = dxr + c * cap;
      for (int64_t p = 0; p < len; ++p) {
        dx_c[p] += wc * dyr[p];
      }
      dwsel[c * s.c_out + o] += lane_dot(dyr, x_pix + c * hw, len);
    }
  }
}

template <int kCIn, typename scalar_t>
void backward_impl(const Shape& s, const at::Tensor& g, const at::Tensor& gs,
                   const at::Tensor& x, const at::Tensor& ids, const at::Tensor& weight,
                   const at::Tensor& bias, const at::Tensor& w7, const at::Tensor& attn,
                   at::Tensor& dx, at::Tensor& dweight, at::Tensor& dbias, at::Tensor& dw7) {
  using acc_t = at::opmath_type<scalar_t>;
  const Params<acc_t, scalar_t> prm(s, ids, weight, bias, w7);
  const Padded pad(s);
  const Bands bands(s);
  const int64_t hw = s.h * s.w;
  Workspace<acc_t> pooled(s.n * 2 * pad.plane(), x);
  Workspace<acc_t> dlogit(s.n * pad.plane(), x);
  Workspace<acc_t> argmax(s.n * hw, x);
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
  const scalar_t* gs_ptr = gs.const_data_ptr<scalar_t>();
  const scalar_t* s_ptr = attn.const_data_ptr<scalar_t>();

  // Pass 1: pooled map, argmax and logit gradient of every pixel.
  at::parallel_for(0, bands.count, 1, [&](int64_t begin, int64_t end) {
    const int64_t cap = bands.rows * s.w;
    std::vector<acc_t> mean(cap), max(cap), gy(cap), y_buf(cap);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, h0, h1;
      bands.get(s, t, n, h0, h1);
      const int64_t pix = n * hw + h0 * s.w;
      pool_pixels<kCIn, acc_t, scalar_t>(
          s, prm, x_ptr + n * s.c_in * hw + h0 * s.w, g_ptr + n * s.c_out * hw + h0 * s.w,
          (h1 - h0) * s.w, mean.data(), max.data(), argmax.data() + pix, gy.data(), y_buf.data());
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t r = (h - h0) * s.w;
        std::copy_n(mean.data() + r, s.w, pooled.data() + pad.at(n, 2, 0, h));
        std::copy_n(max.data() + r, s.w, pooled.data() + pad.at(n, 2, 1, h));
        acc_t* dl = dlogit.data() + pad.at(n, 1, 0, h);
        for (int64_t w = 0; w < s.w; ++w) {
          dl[w] = kernels::attn_logit_grad(gy[r + w] + static_cast<acc_t>(gs_ptr[pix + r + w]),
                                           static_cast<acc_t>(s_ptr[pix + r + w]));
        }
      }
    }
  });

  // Pass 2: dx, and per-thread partial sums of dwsel [c_in, c_out], db [c_out] and dw7 [98]
  // (in lanes: [98, kDw7Lanes]).
  const int64_t dw7_at = s.c_in * s.c_out + s.c_out;
  const int64_t acc_size = dw7_at + 2 * kAttnTaps * kDw7Lanes;
  const int threads = at::get_num_threads();
  std::vector<acc_t> partial(threads * acc_size, acc_t(0));
  scalar_t* dx_ptr = dx.mutable_data_ptr<scalar_t>();
  const acc_t inv_c_out = acc_t(1) / static_cast<acc_t>(s.c_out);
  std::vector<acc_t> w7_flipped(2 * kAttnTaps);
  for (int t = 0; t < 2 * kAttnTaps; ++t) {
    w7_flipped[t] = prm.w7[(t / kAttnTaps) * kAttnTaps + kAttnTaps - 1 - t % kAttnTaps];
  }
  at::parallel_for(0, bands.count, 1, [&](int64_t begin, int64_t end) {
    const int tid = at::get_thread_num();
    TORCH_INTERNAL_ASSERT(tid >= 0 && tid < threads);
    acc_t* dwsel = partial.data() + tid * acc_size;
    acc_t* db = dwsel + s.c_in * s.c_out;
    acc_t* dw7_lanes = dwsel + dw7_at;
    const int64_t cap = bands.rows * s.w;
    std::vector<acc_t> dmean(cap), dmax(cap), sv(cap), dyr(cap), dxr(s.c_in * cap);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n, h0, h1;
      bands.get(s, t, n, h0, h1);
      const int64_t len = (h1 - h0) * s.w;
      const int64_t pix = n * hw + h0 * s.w;
      for (int64_t h = h0; h < h1; ++h) {
        // Transposed 7x7 convolution: the same correlation with the taps flipped.
        const acc_t* dl_win = dlogit.data() + pad.at(n, 1, 0, h) - kAttnPad * (pad.wp + 1);
        const int64_t r = (h - h0) * s.w;
        transposed_stencil_row(dl_win, pad.wp, w7_flipped.data(), dmean.data() + r,
                               dmax.data() + r, s.w);
        const acc_t* mean_win = pooled.data() + pad.at(n, 2, 0, h) - kAttnPad * (pad.wp + 1);
        accumulate_dw7_row(dlogit.data() + pad.at(n, 1, 0, h), mean_win,
                           mean_win + pad.plane(), pad.wp, s.w, dw7_lanes);
      }
      for (int64_t p = 0; p < len; ++p) {
        dmean[p] *= inv_c_out;
        sv[p] = static_cast<acc_t>(s_ptr[pix + p]);
      }
      backprop_pixels<kCIn, acc_t, scalar_t>(
          s, prm, x_ptr + n * s.c_in * hw + h0 * s.w, g_ptr + n * s.c_out * hw + h0 * s.w,
          sv.data(), dmean.data(), dmax.data(), argmax.data() + pix, len, dyr.data(), dxr.data(),
          cap, dwsel, db);
      for (int64_t c = 0; c < s.c_in; ++c) {
        scalar_t* dx_seg = dx_ptr + (n * s.c_in + c) * hw + h0 * s.w;
        for (int64_t p = 0; p < len; ++p) {
          dx_seg[p] = static_cast<scalar_t>(dxr[c * cap + p]);
        }
      }
    }
  });

  // Sum the per-thread partials; dwsel rows scatter to the bank rows of their channel ids
  // (unique, so rows are written once), scaled by d(wsel)/d(W) = 1 / C_in.
  std::vector<acc_t> total(acc_size, acc_t(0));
  for (int t = 0; t < threads; ++t) {
    for (int64_t i = 0; i < acc_size; ++i) {
      total[i] += partial[t * acc_size + i];
    }
  }
  const at::Tensor idc = ids.contiguous();
  const int64_t* id = idc.const_data_ptr<int64_t>();
  const acc_t inv_c_in = acc_t(1) / static_cast<acc_t>(s.c_in);
  scalar_t* dw_ptr = dweight.mutable_data_ptr<scalar_t>();
  for (int64_t c = 0; c < s.c_in; ++c) {
    for (int64_t o = 0; o < s.c_out; ++o) {
      dw_ptr[id[c] * s.c_out + o] = static_cast<scalar_t>(total[c * s.c_out + o] * inv_c_in);
    }
  }
  scalar_t* db_ptr = dbias.mutable_data_ptr<scalar_t>();
  for (int64_t o = 0; o < s.c_out; ++o) {
    db_ptr[o] = static_cast<scalar_t>(total[s.c_in * s.c_out + o]);
  }
  scalar_t* dw7_ptr = dw7.mutable_data_ptr<scalar_t>();
  for (int k = 0; k < 2 * kAttnTaps; ++k) {
    const acc_t* lane = total.data() + dw7_at + k * kDw7Lanes;
    dw7_ptr[k] = static_cast<scalar_t>(std::accumulate(lane, lane + kDw7Lanes, acc_t(0)));
  }
}

} // namespace

std::tuple<at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor& attn_weight) {
  const Shape s = check_inputs(kOp, kCpuDtypes, x, channel_ids, weight, bias, &attn_weight);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({s.n, s.c_out, s.h, s.w}, xc.options());
  at::Tensor attn = at::empty({s.n, 1, s.h, s.w}, xc.options());
  if (out.numel() == 0) {
    return {out, attn};
  }
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "prismlab_channel_attention_cpu", [&] {
    kernels::dispatch_c_in(s.c_in, [&](auto c_in) {
      forward_impl<decltype(c_in)::value, scalar_t>(
          s, xc, channel_ids, weight, bias, attn_weight, out, attn);
    });
  });
  return {out, attn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out,
    const at::Tensor& grad_attention,
    const at::Tensor& x,
    const at::Tensor& channel_ids,
    const at::Tensor& weight,
    const at::Tensor& bias,
    const at::Tensor& attn_weight,
    const at::Tensor& attention) {
  const Shape s = check_inputs(kOp, kCpuDtypes, x, channel_ids, weight, bias, &attn_weight);
  check_attention_grads(kOp, s, x, grad_out, grad_attention, attention);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());
  const at::Tensor xc = x.contiguous();
  at::Tensor dx = at::empty({s.n, s.c_in, s.h, s.w}, xc.options());
  // Rows of the bank for absent channels get exactly zero gradient.
  at::Tensor dweight = at::zeros({s.k, s.c_out}, xc.options());
  at::Tensor dbias = at::zeros({s.c_out}, xc.options());
  at::Tensor dw7 = at::zeros({1, 2, kernels::kAttnKernel, kernels::kAttnKernel}, xc.options());
  if (dx.numel() == 0) {
    return {dx, dweight, dbias, dw7};
  }
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "prismlab_channel_attention_backward_cpu", [&] {
    kernels::dispatch_c_in(s.c_in, [&](auto c_in) {
      backward_impl<decltype(c_in)::value, scalar_t>(
          s, grad_out.contiguous(), grad_attention.contiguous(), xc, channel_ids, weight, bias,
          attn_weight, attention.contiguous(), dx, dweight, dbias, dw7);
    });
  });
  return {dx, dweight, dbias, dw7};
}

} // namespace channel_attention
} // namespace ops
} // namespace prismlab

TORCH_LIBRARY_IMPL(prismlab, CPU, m) {
  m.impl("channel_attention", &prismlab::ops::channel_attention::forward_cpu);
  m.impl("channel_attention_backward", &prismlab::ops::channel_attention::backward_cpu);
}
