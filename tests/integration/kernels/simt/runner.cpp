// Runs the CUDA kernels of prismlab::channel_attention (forward and backward) on the SIMT
// model of simt.h, with the host-side steps of cuda/channel_attention.cu done here by hand.
//   runner IN OUT: IN = int64 header [elem_size, n, c_in, h, w, k, c_out], int64 ids [c_in],
//   then x, weight, bias, w7, grad_out, grad_attention as elem_size floats; OUT = out,
//   attention, dx, dweight, dbias, dw7 in the same float type.
#include "simt.h" // first: defines the CUDA keywords the kernel header uses

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/channel_attention_kernel.cuh"

namespace k = prismlab::kernels::cuda;
using prismlab::kernels::kAttnTaps;

template <typename T>
std::vector<T> read(std::ifstream& in, int64_t count) {
  std::vector<T> v(static_cast<size_t>(count));
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(T)));
  if (!in) {
    throw std::runtime_error("input file too short");
  }
  return v;
}

template <typename T>
void write(std::ofstream& out, const std::vector<T>& v) {
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}

template <typename T>
int run(std::ifstream& in, std::ofstream& out_file, const int64_t* hdr) {
  const int64_t n = hdr[1], c_in = hdr[2], h = hdr[3], w = hdr[4], kb = hdr[5], c_out = hdr[6];
  const int64_t hw = h * w;
  const auto ids = read<int64_t>(in, c_in);
  const auto x = read<T>(in, n * c_in * hw);
  const auto weight = read<T>(in, kb * c_out);
  const auto bias = read<T>(in, c_out);
  const auto w7 = read<T>(in, 2 * kAttnTaps);
  const auto grad_out = read<T>(in, n * c_out * hw);
  const auto grad_s = read<T>(in, n * hw);

  std::vector<T> out(n * c_out * hw), attn(n * hw), dx(n * c_in * hw);
  std::vector<T> pooled(2 * n * hw), dlogit(n * hw);
  std::vector<int32_t> argmax(n * hw);
  std::vector<T> acc((c_in + 1) * c_out + 2 * kAttnTaps, T(0));
  const int ci = static_cast<int>(c_in), co = static_cast<int>(c_out);
  const dim3 grid = k::tile_grid(n, h, w);
  const T inv_c_in = T(1) / static_cast<T>(c_in), inv_c_out = T(1) / static_cast<T>(c_out);

  prismlab::kernels::dispatch_c_in(c_in, [&](auto c) {
    constexpr int kCIn = decltype(c)::value;
    LAUNCH((k::channel_attention_forward_kernel<kCIn, T, T>), grid, dim3(k::kThreads),
           k::forward_smem_bytes<T>(ci, co), x.data(), ids.data(), weight.data(), bias.data(),
           w7.data(), out.data(), attn.data(), ci, co, static_cast<int>(h), static_cast<int>(w),
           inv_c_in, inv_c_out);
    // At most 2 blocks per image, so that the grid-stride loop runs several times.
    LAUNCH((k::channel_attention_backward_pool_kernel<kCIn, T, T>), k::pool_grid(n, hw, 2),
           dim3(k::kPoolThreads), k::backward_pool_smem_bytes<T>(ci, co), x.data(), ids.data(),
           weight.data(), bias.data(), grad_out.data(), grad_s.data(), attn.data(),
           pooled.data(), dlogit.data(), argmax.data(), ci, co, hw, inv_c_in, inv_c_out);
    LAUNCH((k::channel_attention_backward_kernel<kCIn, T, T>), grid, dim3(k::kThreads),
           k::backward_smem_bytes<T>(ci, co), x.data(), ids.data(), weight.data(), w7.data(),
           grad_out.data(), attn.data(), pooled.data(), dlogit.data(), argmax.data(), dx.data(),
           acc.data(), ci, co, static_cast<int>(h), static_cast<int>(w), inv_c_in, inv_c_out);
  });

  std::vector<T> dweight(kb * c_out, T(0)), dbias(c_out), dw7(2 * kAttnTaps);
  for (int64_t c = 0; c < c_in; ++c) {
    for (int64_t o = 0; o < c_out; ++o) {
      dweight[ids[c] * c_out + o] = acc[c * c_out + o] / static_cast<T>(c_in);
    }
  }
  for (int64_t o = 0; o < c_out; ++o) {
    dbias[o] = acc[c_in * c_out + o];
  }
  for (int i = 0; i < 2 * kAttnTaps; ++i) {
    dw7[i] = acc[(c_in + 1) * c_out + i];
  }
  for (const auto* v : {&out, &attn, &dx, &dweight, &dbias, &dw7}) {
    write(out_file, *v);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::ofstream out(argv[2], std::ios::binary);
  int64_t hdr[7];
  in.read(reinterpret_cast<char*>(hdr), sizeof(hdr));
  if (!in || !out) {
    std::fprintf(stderr, "cannot read %s or write %s\n", argv[1], argv[2]);
    return 2;
  }
  return hdr[0] == 8 ? run<double>(in, out, hdr) : run<float>(in, out, hdr);
}
