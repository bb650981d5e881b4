// Operator schemas of the prismlab library and the Python module entry point of prismlab._C.
//
// Kernels are registered per backend next to their implementation:
//   CPU  -> channel_adapter.cpp, channel_attention.cpp     (TORCH_LIBRARY_IMPL(prismlab, CPU, m))
//   CUDA -> cuda/channel_adapter.cu, cuda/channel_attention.cu  (... CUDA, m)
// Fake (meta) kernels and autograd formulas are registered from Python, in
// prismlab/kernels/ops.py.
#include <Python.h>

#include <torch/library.h>

extern "C" {
// `import prismlab._C` loads this shared object, which runs the static TORCH_LIBRARY /
// TORCH_LIBRARY_IMPL initializers below and in the other translation units. The module
// itself is empty: every op is reached through torch.ops.prismlab.*.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C", // name of module
      nullptr, // module documentation
      -1, // size of per-interpreter state of the module
      nullptr, // methods
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(prismlab, m) {
  // y[n,o,h,w] = bias[o] + (1/C_in) * sum_c weight[channel_ids[c], o] * x[n,c,h,w]
  // x [N, C_in, H, W]; channel_ids [C_in] int64 in [0, K), no repeats; weight [K, C_out];
  // bias [C_out]. Returns a contiguous [N, C_out, H, W] tensor of x's dtype.
  m.def("channel_adapter(Tensor x, Tensor channel_ids, Tensor weight, Tensor bias) -> Tensor");

  // Channel adapter y (as above), then CBAM spatial attention, fused (y is never stored):
  //   s = sigmoid(conv2d([mean_o y, max_o y], attn_weight, padding=3));  out = y * s
  // attn_weight [1, 2, 7, 7]. Returns out [N, C_out, H, W] and s [N, 1, H, W]; s is what
  // backward saves (and a map worth looking at).
  m.def(
      "channel_attention(Tensor x, Tensor channel_ids, Tensor weight, Tensor bias, "
      "Tensor attn_weight) -> (Tensor out, Tensor attention)");
  // Gradients of both outputs in; (grad_x, grad_weight, grad_bias, grad_attn_weight) out.
  m.def(
      "channel_attention_backward(Tensor grad_out, Tensor grad_attention, Tensor x, "
      "Tensor channel_ids, Tensor weight, Tensor bias, Tensor attn_weight, Tensor attention) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}
