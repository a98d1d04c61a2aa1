// CPU launcher for fusion_head.h: one OpenMP region, phases separated by the loops' barriers. Two
// forms of the projections (phases 2 and 4), chosen by batch size:
// - B < kGemmMinB (GEMV-shaped, weight-bandwidth-bound): each weight row is read once (converted to
//   float once when needed) and dotted with every batch row, four at a time.
// - B >= kGemmMinB (GEMM-shaped, FMA-bound): the inputs are packed transposed, X^T [K, Bp] (Bp = B
//   rounded up to 16), and an outer-product micro-kernel keeps a [kNR weight rows × up to 64 batch rows]
//   tile of the result in vector registers: per k one broadcast of each weight element and MV vector
//   loads of X^T, so every weight element is read once per 64 batch rows and feeds MV FMAs.

#include <algorithm>
#include <type_traits>
#include <vector>

#include "fusion_head.h"

namespace affectrt {
namespace {

// SIMD width is picked at load time: the build flags are generic x86-64, the machines are not.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AFFECTRT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define AFFECTRT_CLONES
#endif

// o[i] = Σ_k w[k] x_i[k] for four input rows x_i = x + i * x_stride.
AFFECTRT_CLONES void dot4(const float* w, const float* x, int64_t x_stride, int64_t K, float* o) {
  const float *x0 = x, *x1 = x + x_stride, *x2 = x + 2 * x_stride, *x3 = x + 3 * x_stride;
  float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
  for (int64_t k = 0; k < K; ++k) {
    const float wk = w[k];
    a0 += wk * x0[k];
    a1 += wk * x1[k];
    a2 += wk * x2[k];
    a3 += wk * x3[k];
  }
  o[0] = a0, o[1] = a1, o[2] = a2, o[3] = a3;
}

// o[4 i + j] = Σ_k w_i[k] x_j[k]: four weight rows times four input rows, 16 accumulators, so each load
// feeds two FMAs on average (what lets B=64 run near the FMA rate instead of the load rate).
AFFECTRT_CLONES void dot4x4(const float* const* w, const float* x, int64_t x_stride, int64_t K, float* o) {
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  const float *x0 = x, *x1 = x + x_stride, *x2 = x + 2 * x_stride, *x3 = x + 3 * x_stride;
  float a00 = 0.f, a01 = 0.f, a02 = 0.f, a03 = 0.f, a10 = 0.f, a11 = 0.f, a12 = 0.f, a13 = 0.f;
  float a20 = 0.f, a21 = 0.f, a22 = 0.f, a23 = 0.f, a30 = 0.f, a31 = 0.f, a32 = 0.f, a33 = 0.f;
#pragma omp simd reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)
  for (int64_t k = 0; k < K; ++k) {
    const float v0 = x0[k], v1 = x1[k], v2 = x2[k], v3 = x3[k];
    a00 += w0[k] * v0, a01 += w0[k] * v1, a02 += w0[k] * v2, a03 += w0[k] * v3;
    a10 += w1[k] * v0, a11 += w1[k] * v1, a12 += w1[k] * v2, a13 += w1[k] * v3;
    a20 += w2[k] * v0, a21 += w2[k] * v1, a22 += w2[k] * v2, a23 += w2[k] * v3;
    a30 += w3[k] * v0, a31 += w3[k] * v1, a32 += w3[k] * v2, a33 += w3[k] * v3;
  }
  const float r[16] = {a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33};
  for (int i = 0; i < 16; ++i) o[i] = r[i];
}

AFFECTRT_CLONES float dot1(const float* w, const float* x, int64_t K) {
  float a = 0.f;
#pragma omp simd reduction(+ : a)
  for (int64_t k = 0; k < K; ++k) a += w[k] * x[k];
  return a;
}

// The weight row as contiguous floats: the row itself for unit-stride float32, else a converted copy.
template <typename Ty>
const float* row_as_float(const void* W, int64_t n, int64_t sn, int64_t sk, int64_t K, float* buf) {
  using S = typename Ty::storage;
  const S* row = static_cast<const S*>(W) + n * sn;
  if (std::is_same<Ty, F32>::value && sk == 1) return reinterpret_cast<const float*>(row);
  for (int64_t k = 0; k < K; ++k) buf[k] = Ty::load(row[k * sk]);
  return buf;
}

// acc[i * B + b] = w_i · x_b for nw (1 or 4) weight rows and every batch row b, x_b = x + b * x_stride.
inline void gemv_all_rows(const float* const* w, int nw, const float* x, int64_t x_stride, int64_t K, int64_t B,
                          float* acc) {
  int64_t b = 0;
  float o[16];
  if (nw == 4) {
    for (; b + 4 <= B; b += 4) {
      dot4x4(w, x + b * x_stride, x_stride, K, o);
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i * B + b + j] = o[4 * i + j];
    }
  } else {
    for (; b + 4 <= B; b += 4) dot4(w[0], x + b * x_stride, x_stride, K, acc + b);
  }
  for (; b < B; ++b)
    for (int i = 0; i < nw; ++i) acc[i * B + b] = dot1(w[i], x + b * x_stride, K);
}

// ------------------------------------------------------------------ GEMM form (B >= kGemmMinB)

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors are passed only inside always-inlined helpers
#endif

// From B = 8 the GEMM form wins: released dims, 2-core Xeon, fp32, B = 8: 2.7 ms against 4.1 ms for
// the GEMV form (whose 4x4 dot blocks are load-bound); at B = 64 it runs at ~265 GFLOP/s.
constexpr int64_t kGemmMinB = 8;
constexpr int64_t kPadB = 16;     // X^T rows are padded to a multiple of every ISA's vector width
constexpr int kNR = 6;            // weight rows per register tile

// W floats per vector, up to MV vectors of batch columns per register tile. AVX-512: 6×4 accumulators
// + 4 inputs + 1 broadcast of 32 registers; AVX2 and SSE: 6×2 + 2 + 1 of 16.
template <int W_, int MV_>
struct GemmCfg {
  static constexpr int W = W_, MV = MV_;
  typedef float vf __attribute__((vector_size(4 * W_)));
  typedef float vf_u __attribute__((vector_size(4 * W_), aligned(4), __may_alias__));
};

#define AI __attribute__((always_inline)) inline

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
  for (int64_t k = 0; k < K; ++k) {
    vf xv[MV];
    for (int i = 0; i < MV; ++i) xv[i] = *reinterpret_cast<const vf_u*>(xt + k * ldx + i * C::W);
    const float ws[kNR] = {w0[k], w1[k], w2[k], w3[k], w4[k], w5[k]};
    for (int j = 0; j < kNR; ++j) {
      const vf wj = ws[j] - vf{};  // a broadcast: x - (+0) == x folds away, x + 0 would not (-0)
      for (int i = 0; i < MV; ++i) acc[j][i] += xv[i] * wj;
    }
  }
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
  const int64_t left = (cols - b0 + C::W - 1) / C::W;  // vectors in the last, partial block
  if (left == 1) gemm_micro<C, 1>(w, xt + b0, ldx, K, c + b0, ldc);
  if constexpr (C::MV > 2) {
    if (left == 2) gemm_micro<C, 2>(w, xt + b0, ldx, K, c + b0, ldc);
  }
  if constexpr (C::MV > 3) {
    if (left == 3) gemm_micro<C, 3>(w, xt + b0, ldx, K, c + b0, ldc);
  }
}

using GemmFn = void (*)(const float* const*, const float*, int64_t, int64_t, int64_t, float*, int64_t);

#if defined(__GNUC__) && defined(__x86_64__)
#define AFFECTRT_GEMM_CLONES 1
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void gemm_avx512(const float* const* w, const float* xt,
                                                                      int64_t ldx, int64_t K, int64_t cols,
                                                                      float* c, int64_t ldc) {
  gemm_cols<GemmCfg<16, 4>>(w, xt, ldx, K, cols, c, ldc);
}
__attribute__((target("avx2,fma"))) void gemm_avx2(const float* const* w, const float* xt, int64_t ldx, int64_t K,
                                                   int64_t cols, float* c, int64_t ldc) {
  gemm_cols<GemmCfg<8, 2>>(w, xt, ldx, K, cols, c, ldc);
}
#endif
void gemm_base(const float* const* w, const float* xt, int64_t ldx, int64_t K, int64_t cols, float* c,
               int64_t ldc) {
  gemm_cols<GemmCfg<4, 2>>(w, xt, ldx, K, cols, c, ldc);
}

GemmFn pick_gemm() {
#ifdef AFFECTRT_GEMM_CLONES
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return gemm_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return gemm_avx2;
#endif
  return gemm_base;
}

// Float pointers to the kNR weight rows n0.. of W [N, K] (rows past N repeat the last one: computed into
// the tile, never stored), converted into buf [kNR, K] unless float32 with a unit stride.
template <typename Ty>
void tile_rows(const void* W, int64_t n0, int64_t N, int64_t sn, int64_t sk, int64_t K, float* buf,
               const float** w) {
  for (int j = 0; j < kNR; ++j)
    w[j] = j > 0 && n0 + j >= N ? w[j - 1] : row_as_float<Ty>(W, n0 + j, sn, sk, K, buf + j * K);
}

// Store a finished [kNR, Bp] tile of rows n0.. (< N) plus bias: into out[b, rows[b, j_out], n] when
// u_col < 0, else into u[b, u_col + n]. Batch row outermost: one destination row pointer per b.
template <typename Ty>
void store_tile(const FusionHeadArgs& a, const float* tile, int64_t Bp, int64_t n0, int64_t N, const void* bias,
                int j_out, int64_t u_col) {
  using S = typename Ty::storage;
  const int nr = static_cast<int>(std::min<int64_t>(kNR, N - n0));
  float bv[kNR];
  for (int j = 0; j < nr; ++j) bv[j] = Ty::load(static_cast<const S*>(bias)[n0 + j]);
  for (int64_t b = 0; b < a.B; ++b) {
    if (u_col >= 0) {
      float* dst = fh_u(a) + b * 2 * a.dm + u_col + n0;
      for (int j = 0; j < nr; ++j) dst[j] = tile[j * Bp + b] + bv[j];
    } else {
      S* dst = static_cast<S*>(a.out) + b * a.o_sb + a.rows[b * 3 + j_out] * a.o_sl + n0 * a.o_sd;
      for (int j = 0; j < nr; ++j) dst[j * a.o_sd] = Ty::store(tile[j * Bp + b] + bv[j]);
    }
  }
}

template <typename Ty>
void pool_rows(const FusionHeadArgs& a, const void* z, int64_t sb, int64_t st, int64_t sd, int64_t T, int64_t K,
               const void* watt, int64_t watt_sd, const void* batt, int64_t pooled_off, int64_t mean_off, int64_t b,
               std::vector<float>& scores) {
  using S = typename Ty::storage;
  const S* z_b = static_cast<const S*>(z) + b * sb;
  const S* w = static_cast<const S*>(watt);
  const float bias = Ty::load(*static_cast<const S*>(batt));
  for (int64_t t = 0; t < T; ++t) scores[t] = attn_pool_score_partial<Ty>(z_b + t * st, sd, w, watt_sd, K, 0, 1) + bias;
  // Σ_t s_t z_t and mean_t z_t with t outermost: the inner loop over d is unit-stride (vectorised) for
  // contiguous z, and sums in the order of attn_pool_out_at / fh_mean_at.
  float* xp = fh_x(a) + b * fh_x_width(a) + pooled_off;
  float* xm = fh_x(a) + b * fh_x_width(a) + mean_off;
  for (int64_t d = 0; d < K; ++d) xp[d] = 0.f, xm[d] = 0.f;
  for (int64_t t = 0; t < T; ++t) {
    const S* z_t = z_b + t * st;
    const float s_t = scores[t];
    for (int64_t d = 0; d < K; ++d) {
      const float v = Ty::load(z_t[d * sd]);
      xp[d] += s_t * v;
      xm[d] += v;
    }
  }
  for (int64_t d = 0; d < K; ++d) xm[d] /= static_cast<float>(T);
}

template <typename Ty>
void run_gemv(const FusionHeadArgs& a) {
  const int64_t X = fh_x_width(a);
  const int64_t rows2 = 2 * a.D + 2 * a.dm;
  float* u = fh_u(a);
  float* zf = fh_zf(a);
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(std::max(a.Tv, a.Ta)));
    const int64_t kmax = std::max({a.dv, a.da, a.dm});
    std::vector<float> wbuf(static_cast<size_t>(4 * kmax));
    std::vector<float> acc(static_cast<size_t>(4 * a.B));

    // 1: attention-pooled and mean vectors of both modalities.
#pragma omp for schedule(static)
    for (int64_t b = 0; b < a.B; ++b) {
      pool_rows<Ty>(a, a.zv, a.zv_sb, a.zv_st, a.zv_sd, a.Tv, a.dv, a.wva, a.wva_sd, a.bva, 0, a.dv + a.da, b, scores);
      pool_rows<Ty>(a, a.za, a.za_sb, a.za_st, a.za_sd, a.Ta, a.da, a.waa, a.waa_sd, a.baa, a.dv, 2 * a.dv + a.da, b,
                    scores);
    }
    // 2: H_v, H_a, u_v, u_a, four weight rows at a time (one segment) for all batch rows.
#pragma omp for schedule(static)
    for (int64_t r0 = 0; r0 < rows2; r0 += 4) {
      FhSegment seg[4];
      int nw = static_cast<int>(std::min<int64_t>(4, rows2 - r0));
      for (int i = 0; i < nw; ++i) seg[i] = fh_segment(a, r0 + i);
      for (int i = 1; i < nw; ++i)
        if (seg[i].W != seg[0].W) nw = 1;  // a group straddles two segments: go row by row
      for (int64_t r = r0; r < std::min<int64_t>(r0 + 4, rows2); r += nw) {
        const float* w[4];
        for (int i = 0; i < nw; ++i) {
          const FhSegment& s = seg[r - r0 + i];
          w[i] = row_as_float<Ty>(s.W, s.n, s.sn, s.sk, s.K, wbuf.data() + i * kmax);
        }
        const FhSegment& s0 = seg[r - r0];
        gemv_all_rows(w, nw, fh_x(a) + s0.x_off, X, s0.K, a.B, acc.data());
        for (int i = 0; i < nw; ++i)
          for (int64_t b = 0; b < a.B; ++b) fh_store_segment<Ty>(a, seg[r - r0 + i], b, acc[i * a.B + b]);
      }
    }
    // 3: the folded gate and the gated sum z_f = g0 u_v + g1 u_a.
#pragma omp for schedule(static)
    for (int64_t b = 0; b < a.B; ++b) {
      const float* u_b = u + b * 2 * a.dm;
      const auto* bg = static_cast<const typename Ty::storage*>(a.bg);
      const float g0 = fh_gate_partial<Ty>(a, 0, u_b, 0, 1) + Ty::load(bg[0]);
      const float g1 = fh_gate_partial<Ty>(a, 1, u_b, 0, 1) + Ty::load(bg[1]);
      for (int64_t k = 0; k < a.dm; ++k) zf[b * a.dm + k] = g0 * u_b[k] + g1 * u_b[a.dm + k];
    }
    // 4: H_m = W_mp z_f + b_mp, four rows at a time.
#pragma omp for schedule(static)
    for (int64_t n0 = 0; n0 < a.D; n0 += 4) {
      const int nw = a.D - n0 >= 4 ? 4 : 1;
      for (int64_t n = n0; n < std::min<int64_t>(n0 + 4, a.D); n += nw) {
        const float* w[4];
        for (int i = 0; i < nw; ++i)
          w[i] = row_as_float<Ty>(a.Wmp, n + i, a.Wmp_sn, a.Wmp_sk, a.dm, wbuf.data() + i * kmax);
        gemv_all_rows(w, nw, zf, a.dm, a.dm, a.B, acc.data());
        for (int i = 0; i < nw; ++i) {
          const float bias = Ty::load(static_cast<const typename Ty::storage*>(a.bmp)[n + i]);
          for (int64_t b = 0; b < a.B; ++b) fh_store_out<Ty>(a, b, 0, n + i, acc[i * a.B + b] + bias);
        }
      }
    }
  }
}

// The GEMM form (B >= kGemmMinB): as run_gemv, but phases 2 and 4 run gemm_micro tiles on the inputs
// packed transposed into scratch reused across calls: X^T [2dv+2da, Bp] and z_f^T [dm, Bp].
template <typename Ty>
void run_gemm(const FusionHeadArgs& a) {
  using S = typename Ty::storage;
  const int64_t X = fh_x_width(a);
  const int64_t Bp = (a.B + kPadB - 1) / kPadB * kPadB;
  // Reused across calls (per calling thread): a fresh MB-sized buffer would page-fault on every call.
  static thread_local std::vector<float> scratch;
  const size_t need = static_cast<size_t>(Bp * (X + a.dm));
  if (scratch.size() < need) scratch.resize(need);
  float* xt = scratch.data();
  float* zft = xt + Bp * X;
  float* u = fh_u(a);
  const GemmFn gemm = pick_gemm();
  // Phase 2's tiles, kNR rows each, of W_v, W_a (-> out rows video, audio), W_mv, W_ma (-> u).
  struct Mat {
    const void *W, *bias;
    int64_t N, K, sn, sk, x_off;
    int j_out;
    int64_t u_col;
  };
  const Mat mats[4] = {
      {a.Wv, a.cv, a.D, a.dv, a.Wv_sn, a.Wv_sk, 0, 2, -1},
      {a.Wa, a.ca, a.D, a.da, a.Wa_sn, a.Wa_sk, a.dv, 1, -1},
      {a.Wmv, a.bmv, a.dm, a.dv, a.Wmv_sn, a.Wmv_sk, a.dv + a.da, 0, 0},
      {a.Wma, a.bma, a.dm, a.da, a.Wma_sn, a.Wma_sk, 2 * a.dv + a.da, 0, a.dm},
  };
  int64_t first_tile[5] = {0};
  for (int m = 0; m < 4; ++m) first_tile[m + 1] = first_tile[m] + (mats[m].N + kNR - 1) / kNR;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(std::max(a.Tv, a.Ta)));
    std::vector<float> wbuf(static_cast<size_t>(kNR * std::max({a.dv, a.da, a.dm})));
    std::vector<float> tile(static_cast<size_t>(kNR * Bp));
    const float* w[kNR];

    // 1: attention-pooled and mean vectors of both modalities, then X^T (padding columns zeroed).
#pragma omp for schedule(static)
    for (int64_t b = 0; b < a.B; ++b) {
      pool_rows<Ty>(a, a.zv, a.zv_sb, a.zv_st, a.zv_sd, a.Tv, a.dv, a.wva, a.wva_sd, a.bva, 0, a.dv + a.da, b, scores);
      pool_rows<Ty>(a, a.za, a.za_sb, a.za_st, a.za_sd, a.Ta, a.da, a.waa, a.waa_sd, a.baa, a.dv, 2 * a.dv + a.da, b,
                    scores);
    }
#pragma omp for schedule(static)
    for (int64_t col = 0; col < X; ++col) {
      for (int64_t b = 0; b < a.B; ++b) xt[col * Bp + b] = fh_x(a)[b * X + col];
      for (int64_t b = a.B; b < Bp; ++b) xt[col * Bp + b] = 0.f;
    }
    // 2: H_v, H_a, u_v, u_a. Dynamic: the matrices' K differ.
#pragma omp for schedule(dynamic, 8)
    for (int64_t t = 0; t < first_tile[4]; ++t) {
      int m = 0;
      while (t >= first_tile[m + 1]) ++m;
      const Mat& M = mats[m];
      const int64_t n0 = (t - first_tile[m]) * kNR;
      tile_rows<Ty>(M.W, n0, M.N, M.sn, M.sk, M.K, wbuf.data(), w);
      gemm(w, xt + M.x_off * Bp, Bp, M.K, a.B, tile.data(), Bp);
      store_tile<Ty>(a, tile.data(), Bp, n0, M.N, M.bias, M.j_out, M.u_col);
    }
    // 3: the folded gate and the gated sum, written transposed: z_f^T [dm, Bp] (padding zeroed).
#pragma omp for schedule(static)
    for (int64_t b = 0; b < Bp; ++b) {
      if (b >= a.B) {
        for (int64_t k = 0; k < a.dm; ++k) zft[k * Bp + b] = 0.f;
        continue;
      }
      const float* u_b = u + b * 2 * a.dm;
      const S* bg = static_cast<const S*>(a.bg);
      const float g0 = fh_gate_partial<Ty>(a, 0, u_b, 0, 1) + Ty::load(bg[0]);
      const float g1 = fh_gate_partial<Ty>(a, 1, u_b, 0, 1) + Ty::load(bg[1]);
      for (int64_t k = 0; k < a.dm; ++k) zft[k * Bp + b] = g0 * u_b[k] + g1 * u_b[a.dm + k];
    }
    // 4: H_m = W_mp z_f + b_mp.
#pragma omp for schedule(static)
    for (int64_t t = 0; t < (a.D + kNR - 1) / kNR; ++t) {
      tile_rows<Ty>(a.Wmp, t * kNR, a.D, a.Wmp_sn, a.Wmp_sk, a.dm, wbuf.data(), w);
      gemm(w, zft, Bp, a.dm, a.B, tile.data(), Bp);
      store_tile<Ty>(a, tile.data(), Bp, t * kNR, a.D, a.bmp, 0, -1);
    }
  }
}

template <typename Ty>
void run(const FusionHeadArgs& a) {
  if (a.B >= kGemmMinB)
    run_gemm<Ty>(a);
  else
    run_gemv<Ty>(a);
}

}  // namespace

const char* fusion_head_cpu(const FusionHeadArgs& a, int dtype) {
  if (a.B == 0) return nullptr;
  if (a.Tv <= 0 || a.Ta <= 0) return "fusion_head_cpu: z_video and z_audio need at least one time step";
  switch (dtype) {
    case kFloat32: run<F32>(a); return nullptr;
    case kFloat16: run<F16>(a); return nullptr;
    case kBFloat16: run<BF16>(a); return nullptr;
    default: return "fusion_head_cpu: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  }
}

}  // namespace affectrt
