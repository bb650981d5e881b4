// A small SIMT execution model on CPU threads, enough to run prismlab's CUDA kernel bodies
// (.cuh) compiled by a host compiler: every thread of a block is an OS thread,
// __syncthreads() is a barrier over the block, dynamic shared memory is one buffer per block,
// warp shuffles exchange values through a per-warp slot array between two warp barriers,
// atomics are std::atomic_ref. Blocks run one after another. Test-only.
#pragma once

#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace simt {

struct Warp {
  explicit Warp(std::ptrdiff_t lanes) : barrier(lanes) {}
  std::barrier<> barrier;
  alignas(8) unsigned char slots[32][8];
};

struct Block {
  Block(unsigned threads, size_t smem_bytes)
      : barrier(threads), smem(new unsigned char[smem_bytes + 16]) {
    // Garbage, not zeros, so that reads of shared memory nobody wrote show up as mismatches.
    std::memset(smem.get(), 0xA5, smem_bytes + 16);
    for (unsigned first = 0; first < threads; first += 32) {
      warps.push_back(std::make_unique<Warp>(std::min(32u, threads - first)));
    }
  }
  std::barrier<> barrier;
  std::unique_ptr<unsigned char[]> smem;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* current_block = nullptr;

} // namespace simt

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define PRISMLAB_DYNAMIC_SMEM(name) unsigned char* name = ::simt::current_block->smem.get()

inline void __syncthreads() {
  simt::current_block->barrier.arrive_and_wait();
}

template <typename T>
T __shfl_down_sync(unsigned /*mask: all lanes take part in this model*/, T v, unsigned delta) {
  static_assert(sizeof(T) <= 8);
  simt::Warp& warp = *simt::current_block->warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  std::memcpy(warp.slots[lane], &v, sizeof(T));
  warp.barrier.arrive_and_wait();
  T out = v;
  const unsigned lanes = std::min(32u, blockDim.x - threadIdx.x / 32 * 32);
  if (lane + delta < lanes) {
    std::memcpy(&out, warp.slots[lane + delta], sizeof(T));
  }
  warp.barrier.arrive_and_wait(); // nobody overwrites a slot before everyone has read it
  return out;
}

template <typename T>
T atomicAdd(T* address, T v) {
  return std::atomic_ref<T>(*address).fetch_add(v);
}

namespace simt {

// kernel<<<grid, block, smem>>>(args...) as launch(grid, block, smem, [&] { kernel(args...); }).
inline void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  gridDim = grid;
  blockDim = block;
  const unsigned threads = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block blk(threads, smem_bytes);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            current_block = &blk;
            blockIdx = dim3(bx, by, bz);
            threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
            body();
          });
        }
        for (auto& th : pool) {
          th.join();
        }
      }
    }
  }
}

} // namespace simt

#define LAUNCH(kernel, grid, block, smem, ...) \
  ::simt::launch((grid), (block), (smem), [&] { kernel(__VA_ARGS__); })
