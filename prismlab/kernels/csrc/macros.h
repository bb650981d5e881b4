// Torch-free helper macros shared by the CPU (.cpp) and CUDA (.cu) translation units.
#pragma once

// Functions marked PRISMLAB_HOST_DEVICE are compiled for both the host and, when nvcc
// compiles the translation unit, the device. Under a plain C++ compiler the macro is empty.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define PRISMLAB_HOST_DEVICE __host__ __device__
#else
#define PRISMLAB_HOST_DEVICE
#endif

#define PRISMLAB_INLINE PRISMLAB_HOST_DEVICE inline

// GCC, Clang and nvcc all accept __restrict__.
#define PRISMLAB_RESTRICT __restrict__

// Dynamic shared memory of a kernel as a byte array `name`. Only nvcc defines it here; the
// SIMT test harness (tests/kernels/simt/simt.h), which compiles the .cuh kernel bodies with a
// host compiler, defines it as a per-block buffer.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define PRISMLAB_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// Hot CPU loops are compiled three times (AVX-512, AVX2 + FMA, baseline x86-64) and the
// loader picks the best the CPU has (GCC/Clang function multi-versioning). The extension is
// built without -march, like PyTorch's own CPU kernels, so it runs on any x86-64 machine.
#if defined(__x86_64__) && !defined(__CUDACC__) && !defined(__HIPCC__) && \
    (defined(__GNUC__) || defined(__clang__))
#define PRISMLAB_CPU_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PRISMLAB_CPU_MULTIVERSION
#endif
