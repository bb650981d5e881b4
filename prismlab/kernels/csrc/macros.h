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
