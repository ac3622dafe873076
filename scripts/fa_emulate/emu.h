// CPU emulation of the CUDA features the flash-attention forward kernels use: one std::thread
// per CUDA thread, warp collectives through per-warp exchange slots and barriers.
#pragma once
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>
#include <cstdio>
#include <cstdlib>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n) alignas(n)

struct Dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local Dim3 threadIdx, blockIdx, gridDim;
struct uint4 { uint32_t x, y, z, w; };
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }

template <class A, class B> auto min(A a, B b) { using C = std::common_type_t<A, B>; return C(a) < C(b) ? C(a) : C(b); }
template <class A, class B> auto max(A a, B b) { using C = std::common_type_t<A, B>; return C(a) > C(b) ? C(a) : C(b); }

struct __nv_bfloat16 { uint16_t x; };
struct __nv_bfloat162 { __nv_bfloat16 a, b; };
inline uint16_t f2bf(float f) {
  uint32_t u; std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7fc0;
  const uint32_t r = u + 0x7fff + ((u >> 16) & 1);
  return uint16_t(r >> 16);
}
inline float bf2f(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {{f2bf(lo)}, {f2bf(hi)}}; }

namespace emu {
struct Barrier {
  std::mutex m; std::condition_variable cv; int n, count = 0; uint64_t gen = 0;
  explicit Barrier(int n_) : n(n_) {}
  void wait() {
    std::unique_lock<std::mutex> lk(m);
    const uint64_t g = gen;
    if (++count == n) { count = 0; ++gen; cv.notify_all(); return; }
    cv.wait(lk, [&] { return gen != g; });
  }
};
struct Warp {
  Barrier bar{32};
  uint32_t slot[32][12];
};
struct Block {
  unsigned char* smem;
  Barrier* bar;
  Warp* warps;
};
inline Block* g_block = nullptr;  // set before the threads start
inline unsigned char* smem() { return g_block->smem; }
inline Warp& warp() { return g_block->warps[threadIdx.x / 32]; }
inline int lane() { return threadIdx.x % 32; }
}  // namespace emu

inline void __syncthreads() { emu::g_block->bar->wait(); }
inline void __syncwarp() { emu::warp().bar.wait(); }
inline float __shfl_xor_sync(unsigned, float v, int m) {
  auto& w = emu::warp(); const int l = emu::lane();
  std::memcpy(&w.slot[l][0], &v, 4); w.bar.wait();
  float r; std::memcpy(&r, &w.slot[l ^ m][0], 4); w.bar.wait(); return r;
}
inline bool __any_sync(unsigned, bool p) {
  auto& w = emu::warp(); const int l = emu::lane();
  w.slot[l][0] = p; w.bar.wait();
  bool r = false; for (int i = 0; i < 32; ++i) r |= w.slot[i][0] != 0;
  w.bar.wait(); return r;
}
inline uint32_t smem_u32(const void* p) { return uint32_t(static_cast<const unsigned char*>(p) - emu::smem()); }
// cp.async lands as late as the PTX allows: only at a wait_group that covers its group, so
// a missing wait (or a read of another thread's copy before a barrier) reads stale bytes.
namespace emu {
struct Pending { unsigned char* dst; unsigned char bytes[16]; };
inline thread_local std::vector<Pending> open_group;
inline thread_local std::vector<std::vector<Pending>> groups;
}  // namespace emu
inline void cp_async16(void* s, const void* g) {
  emu::Pending p; p.dst = static_cast<unsigned char*>(s); std::memcpy(p.bytes, g, 16);
  emu::open_group.push_back(p);
}
inline void cp_async16_u32(uint32_t a, const void* g) { cp_async16(emu::smem() + a, g); }
inline void st_shared_zero16(uint32_t a) { std::memset(emu::smem() + a, 0, 16); }
inline void cp_async_commit() { emu::groups.push_back(std::move(emu::open_group)); emu::open_group.clear(); }
template <int N> inline void cp_async_wait() {
  while (emu::groups.size() > size_t(N)) {
    for (auto& p : emu::groups.front()) std::memcpy(p.dst, p.bytes, 16);
    emu::groups.erase(emu::groups.begin());
  }
}
inline float fast_exp2(float x) { return std::exp2(x); }
// ldmatrix x4: lanes 8j..8j+7 give the row addresses of matrix j; lane l gets, of matrix j,
// row l/4 cols 2(l%4), 2(l%4)+1 (trans: rows 2(l%4), 2(l%4)+1 of col l/4).
inline void ldsm_impl(uint32_t (&r)[4], uint32_t addr, bool trans) {
  auto& w = emu::warp(); const int l = emu::lane();
  w.slot[l][0] = addr; w.bar.wait();
  for (int j = 0; j < 4; ++j) {
    uint16_t e[2];
    for (int k = 0; k < 2; ++k) {
      int row, col;
      if (!trans) { row = l / 4; col = 2 * (l % 4) + k; } else { row = 2 * (l % 4) + k; col = l / 4; }
      const uint32_t a = w.slot[8 * j + row][0] + 2 * col;
      std::memcpy(&e[k], emu::smem() + a, 2);
    }
    r[j] = uint32_t(e[0]) | (uint32_t(e[1]) << 16);
  }
  w.bar.wait();
}
inline void ldsm_x4(uint32_t (&r)[4], uint32_t a) { ldsm_impl(r, a, false); }
inline void ldsm_x4_trans(uint32_t (&r)[4], uint32_t a) { ldsm_impl(r, a, true); }
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldsm_impl(r, smem_u32(p), false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldsm_impl(r, smem_u32(p), true); }
// mma m16n8k16: A a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..);
// B b0 (k 2t, 2t+1; n g), b1 (k 2t+8, 2t+9; n g); C c0,c1 (g, 2t, 2t+1), c2,c3 (g+8, ...).
inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  auto& w = emu::warp(); const int l = emu::lane();
  for (int i = 0; i < 4; ++i) w.slot[l][i] = a[i];
  w.slot[l][4] = b0; w.slot[l][5] = b1;
  w.bar.wait();
  auto lo = [](uint32_t v) { return bf2f(uint16_t(v & 0xffff)); };
  auto hi = [](uint32_t v) { return bf2f(uint16_t(v >> 16)); };
  auto A = [&](int m, int k) {  // element (m, k) of the 16x16 A
    const int g = m % 8, t = (k % 8) / 2, reg = (m >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    const uint32_t v = w.slot[g * 4 + t][reg];
    return (k % 2) ? hi(v) : lo(v);
  };
  auto B = [&](int k, int n) {
    const int t = (k % 8) / 2, reg = k >= 8 ? 5 : 4;
    const uint32_t v = w.slot[n * 4 + t][reg];
    return (k % 2) ? hi(v) : lo(v);
  };
  const int g = l / 4, t = l % 4;
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int m = g + (e >= 2 ? 8 : 0), n = 2 * t + (e & 1);
    float s = d[e];
    for (int k = 0; k < 16; ++k) s += A(m, k) * B(k, n);
    out[e] = s;
  }
  w.bar.wait();
  for (int e = 0; e < 4; ++e) d[e] = out[e];
}

template <class F>
void emu_launch(Dim3 grid, int threads, size_t smem_bytes, F kernel) {
  std::vector<unsigned char> sm(smem_bytes + 64);
  unsigned char* base = sm.data() + (16 - (reinterpret_cast<uintptr_t>(sm.data()) & 15)) % 16;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::memset(base, 0xAB, smem_bytes);  // garbage, like real shared memory
      emu::Barrier bar(threads);
      std::vector<emu::Warp> warps(threads / 32);
      emu::Block blk{base, &bar, warps.data()};
      emu::g_block = &blk;
      std::vector<std::thread> ts;
      for (int i = 0; i < threads; ++i)
        ts.emplace_back([&, i] {
          threadIdx.x = i; blockIdx.x = bx; blockIdx.y = by; gridDim = grid;
          emu::open_group.clear(); emu::groups.clear();
          kernel();
          if (!emu::open_group.empty() || !emu::groups.empty()) {
            std::fprintf(stderr, "cp.async copies never waited for\n"); std::abort();
          }
        });
      for (auto& t : ts) t.join();
    }
}
