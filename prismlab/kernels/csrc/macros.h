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
