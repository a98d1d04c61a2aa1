// CPU GEMV/GEMM building blocks on float32 weight rows, shared by the fusion head (fusion_head_cpu.cpp) and
// the few-rows linear (rows_linear_cpu.cpp). Each TU gets its own copy (anonymous namespace): the ISA kernels
// are picked once per TU at first use.
//
// - gemv: o[b] = w · x_b for a handful of rows x_b, each weight row read once with wide loads, independent
//   accumulators and a software prefetch ahead (bound by reading the weights).
// - gemm: an outer-product micro-kernel over X^T [K, Bp] (rows padded to kPadB) keeping a [kNR weight rows ×
//   up to 64 columns] tile in vector registers; every weight element is read once per 64 columns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.h"

namespace affectrt {
namespace {

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors are passed only inside always-inlined helpers
#endif

#define AI __attribute__((always_inline)) inline

constexpr int64_t kPadB = 16;        // X^T rows are padded to a multiple of every ISA's vector width
constexpr int kNR = 6;               // weight rows per register tile
constexpr int64_t kPrefetch = 512;   // GEMV: floats ahead of the read (2 KB; 1-8 KB measured alike)

// Per calling thread, grown when needed and never shrunk (≈ 3 MB at the released dims and B = 64).
float* scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Per-thread slices of the scratch start on their own cache lines.
inline int64_t round_line(int64_t n) { return (n + 15) / 16 * 16; }

// ------------------------------------------------------------------ vector kernels, one per ISA

// W floats per vector, up to MV vectors of batch columns per register tile. AVX-512: 6×4 accumulators
// + 4 inputs + 1 broadcast of 32 registers; AVX2 and SSE: 6×2 + 2 + 1 of 16.
template <int W_, int MV_>
struct VecCfg {
  static constexpr int W = W_, MV = MV_;
  typedef float vf __attribute__((vector_size(4 * W_)));
  typedef float vf_u __attribute__((vector_size(4 * W_), aligned(4), __may_alias__));
};

template <typename C>
AI typename C::vf vload(const float* p) {
  return *reinterpret_cast<const typename C::vf_u*>(p);
}

// o[i] = w · x_i for NB batch rows x_i = x + i·xs. U vectors per step so that NB·U ≥ 4 accumulators
// hide the FMA latency; the weight row is prefetched kPrefetch floats ahead (into the next row: the
// matrices are walked row after row).
template <typename C, int NB>
AI void gemv_nb(const float* w, const float* x, int64_t xs, int64_t K, float* o) {
  using vf = typename C::vf;
  constexpr int W = C::W, U = NB == 1 ? 4 : NB == 2 ? 2 : 1;
  vf acc[NB][U] = {};
  int64_t k = 0;
  for (; k + U * W <= K; k += U * W) {
    for (int p = 0; p < U * W; p += 16) __builtin_prefetch(w + k + kPrefetch + p);
    for (int u = 0; u < U; ++u) {
      const vf wv = vload<C>(w + k + u * W);
      for (int i = 0; i < NB; ++i) acc[i][u] += wv * vload<C>(x + i * xs + k + u * W);
    }
  }
  for (int i = 0; i < NB; ++i) {
    vf s = acc[i][0];
    for (int u = 1; u < U; ++u) s += acc[i][u];
    float r = 0.f;
    for (int l = 0; l < W; ++l) r += s[l];
    for (int64_t kk = k; kk < K; ++kk) r += w[kk] * x[i * xs + kk];
    o[i] = r;
  }
}

// o[b] = w · x_b for every batch row b < B (the weight row stays in L1 across the groups of 4).
template <typename C>
AI void gemv_row(const float* w, const float* x, int64_t xs, int64_t K, int64_t B, float* o) {
  int64_t b = 0;
  for (; b + 4 <= B; b += 4) gemv_nb<C, 4>(w, x + b * xs, xs, K, o + b);
  switch (B - b) {
    case 3: gemv_nb<C, 3>(w, x + b * xs, xs, K, o + b); break;
    case 2: gemv_nb<C, 2>(w, x + b * xs, xs, K, o + b); break;
    case 1: gemv_nb<C, 1>(w, x + b * xs, xs, K, o + b); break;
    default: break;
  }
}

// c[j * ldc + b] = Σ_{k<K} w[j][k] xt[k * ldx + b] for j < kNR and MV·W columns b. The whole K runs in
// registers: the kNR weight rows stream once, sequentially (the hardware prefetcher follows them), and
// xt [K, MV·W] stays in L2. Measured on the 2-core Xeon: ≈ 93% of the FMA peak on one core, 264 GFLOP/s
// on two (N = 3584, K = 1024, 64 columns); blocking K for L1 was slower (205: the rows' short segments
// defeat the prefetcher).
template <typename C, int MV>
AI void gemm_micro(const float* const* w, const float* xt, int64_t ldx, int64_t K, float* c, int64_t ldc) {
  using vf = typename C::vf;
  using vf_u = typename C::vf_u;
  vf acc[kNR][MV] = {};
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5];
  auto step = [&](int64_t k) __attribute__((always_inline)) {
    vf xv[MV];
    for (int i = 0; i < MV; ++i) xv[i] = vload<C>(xt + k * ldx + i * C::W);
    const float ws[kNR] = {w0[k], w1[k], w2[k], w3[k], w4[k], w5[k]};
    for (int j = 0; j < kNR; ++j) {
      const vf wj = ws[j] - vf{};  // a broadcast: x - (+0) == x folds away, x + 0 would not (-0)
      for (int i = 0; i < MV; ++i) acc[j][i] += xv[i] * wj;
    }
  };
  // Two k per iteration: the next X^T row's loads issue while this row's FMAs run (scratch harness, 2-core
  // Xeon, N = 3600, K = 1024, 64 columns, two threads: 400-406 against 374-380 GFLOP/s; by 1, 4 or 8: 360-378;
  // code-layout sensitive, so judged on the real build: benchmarks/kernels.py --ops fusion_head).
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) step(k), step(k + 1);
  if (k < K) step(k);
  for (int j = 0; j < kNR; ++j)
    for (int i = 0; i < MV; ++i) *reinterpret_cast<vf_u*>(c + j * ldc + i * C::W) = acc[j][i];
}

// gemm_micro over `cols` batch columns (rounded up to W; xt and c are padded to kPadB columns).
template <typename C>
AI void gemm_cols(const float* const* w, const float* xt, int64_t ldx, int64_t K, int64_t cols, float* c,
                  int64_t ldc) {
  constexpr int step = C::MV * C::W;
  int64_t b0 = 0;
  for (; b0 + step <= cols; b0 += step) gemm_micro<C, C::MV>(w, xt + b0, ldx, K, c + b0, ldc);
  // Vectors in the last, partial block: 1 .. MV (MV itself when its columns are not all real: AVX2's
  // 2 × 8 for 9-15 columns; an earlier `MV > 2` guard skipped them on AVX2 and baseline CPUs).
  const int64_t left = (cols - b0 + C::W - 1) / C::W;
  if (left == 1) gemm_micro<C, 1>(w, xt + b0, ldx, K, c + b0, ldc);
  if constexpr (C::MV >= 2) {
    if (left == 2) gemm_micro<C, 2>(w, xt + b0, ldx, K, c + b0, ldc);
  }
  if constexpr (C::MV >= 3) {
    if (left == 3) gemm_micro<C, 3>(w, xt + b0, ldx, K, c + b0, ldc);
  }
  if constexpr (C::MV >= 4) {
    if (left == 4) gemm_micro<C, 4>(w, xt + b0, ldx, K, c + b0, ldc);
  }
}

// The ISA's kernels: gemm (above) and gemv (o[b] = w · x_b for all B rows, see gemv_row).
struct Kernels {
  void (*gemm)(const float* const*, const float*, int64_t, int64_t, int64_t, float*, int64_t);
  void (*gemv)(const float*, const float*, int64_t, int64_t, int64_t, float*);
};

#define AFFECTRT_KERNELS(name, attr, C)                                                                    \
  attr void name##_gemm(const float* const* w, const float* xt, int64_t ldx, int64_t K, int64_t cols,       \
                        float* c, int64_t ldc) {                                                            \
    gemm_cols<C>(w, xt, ldx, K, cols, c, ldc);                                                              \
  }                                                                                                         \
  attr void name##_gemv(const float* w, const float* x, int64_t xs, int64_t K, int64_t B, float* o) {      \
    gemv_row<C>(w, x, xs, K, B, o);                                                                         \
  }

using CfgAvx512 = VecCfg<16, 4>;
using CfgAvx2 = VecCfg<8, 2>;
using CfgBase = VecCfg<4, 2>;
#if defined(__GNUC__) && defined(__x86_64__)
#define AFFECTRT_ISA_CLONES 1
AFFECTRT_KERNELS(avx512, __attribute__((target("avx512f,avx512vl,avx2,fma"))), CfgAvx512)
AFFECTRT_KERNELS(avx2, __attribute__((target("avx2,fma"))), CfgAvx2)
#endif
AFFECTRT_KERNELS(base, , CfgBase)

Kernels pick_kernels() {
#ifdef AFFECTRT_ISA_CLONES
  if (cpu_isa() == 2) return {avx512_gemm, avx512_gemv};
  if (cpu_isa() == 1) return {avx2_gemm, avx2_gemv};
#endif
  return {base_gemm, base_gemv};
}

const Kernels& kernels() {
  static const Kernels k = pick_kernels();
  return k;
}

}  // namespace
}  // namespace affectrt
