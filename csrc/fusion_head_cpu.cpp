// CPU launcher for fusion_head.h: one OpenMP region, phases separated by barriers. Two forms of the
// projections (phases 2 and 4), chosen by batch size:
// - B < kGemmMinB (GEMV-shaped, bound by reading the weights from cache): each thread streams one
//   contiguous range of weight rows, split by element count (the matrices' K differ), each row read once
//   with wide loads, independent accumulators and a software prefetch ahead (a plain read of the 48 MB on
//   the 2-core Xeon: 40 GB/s without, 50 with: the hardware prefetcher alone keeps too few lines in
//   flight), and dotted with every batch row.
// - B >= kGemmMinB (GEMM-shaped, FMA-bound): the inputs live transposed, X^T [K, Bp] (Bp = B rounded up
//   to 16), and an outer-product micro-kernel keeps a [kNR weight rows × up to 64 batch rows] tile of the
//   result in vector registers: per k one broadcast of each weight element and MV vector loads of X^T, so
//   every weight element is read once per 64 batch rows and feeds MV FMAs.
// All scratch (pooled vectors, u, z_f, X^T, per-thread buffers) is one buffer per calling thread, reused
// across calls: a fresh MB-sized buffer per call pays its page faults every time.

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu_convert.h"
#include "cpu_gemm.h"
#include "fusion_head.h"

namespace affectrt {
namespace {

// From B = 8 the GEMM form wins: released dims, 2-core Xeon, fp32, B = 8: 2.7 ms against 4.1 ms for
// the GEMV form; at B = 64 it runs at ~265 GFLOP/s.
constexpr int64_t kGemmMinB = 8;
constexpr int kChunk = 8 * kNR;  // rows per scheduled chunk (48: three cache lines of each out row)

// ------------------------------------------------------------------ small vectorised helpers

AFFECTRT_CLONES float dotf(const float* w, const float* x, int64_t K) {
  float a = 0.f;
#pragma omp simd reduction(+ : a)
  for (int64_t k = 0; k < K; ++k) a += w[k] * x[k];
  return a;
}

// scores[t] = w · z_t + bias for the T rows z_t = z + t·st, four rows per pass over w: four independent
// sums (a single dot's sum is one chain of FMAs, bound by their latency).
AFFECTRT_CLONES void pool_scores(const float* z, int64_t st, int64_t T, int64_t K, const float* w, float bias,
                                 float* scores) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) {
    const float *z0 = z + t * st, *z1 = z0 + st, *z2 = z1 + st, *z3 = z2 + st;
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t k = 0; k < K; ++k) a0 += w[k] * z0[k], a1 += w[k] * z1[k], a2 += w[k] * z2[k], a3 += w[k] * z3[k];
    scores[t] = a0 + bias, scores[t + 1] = a1 + bias, scores[t + 2] = a2 + bias, scores[t + 3] = a3 + bias;
  }
  for (; t < T; ++t) scores[t] = dotf(w, z + t * st, K) + bias;
}

// xp[d] = Σ_t s_t z_t[d], xm[d] = Σ_t z_t[d] / T, each sum in t order, 64 columns at a time held in
// registers across the T rows (one pass per t wrote xp and xm T times).
AFFECTRT_CLONES void pool_sums(const float* z, int64_t st, int64_t T, int64_t K, const float* s, float* xp,
                               float* xm) {
  constexpr int64_t kB = 64;
  const float Tf = static_cast<float>(T);  // a division, as torch.mean
  for (int64_t d0 = 0; d0 < K; d0 += kB) {
    const int64_t n = std::min(kB, K - d0);
    float p[kB] = {}, m[kB] = {};
    if (n == kB) {
      for (int64_t t = 0; t < T; ++t) {
        const float *zt = z + t * st + d0, sv = s[t];
#pragma omp simd
        for (int64_t i = 0; i < kB; ++i) p[i] += sv * zt[i], m[i] += zt[i];
      }
    } else {
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < n; ++i) p[i] += s[t] * z[t * st + d0 + i], m[i] += z[t * st + d0 + i];
    }
    for (int64_t i = 0; i < n; ++i) xp[d0 + i] = p[i], xm[d0 + i] = m[i] / Tf;
  }
}

// Attention-pooled xp[d] = Σ_t (z_t·w + b) z_t[d] and mean xm[d] = Σ_t z_t[d] / T of one batch row z_b.
// Sums in t order (as attn_pool_out_at / fh_mean_at); float32 contiguous rows take the vectorised loops.
template <typename Ty>
void pool_one(const typename Ty::storage* z_b, int64_t st, int64_t sd, int64_t T, int64_t K,
              const typename Ty::storage* w, int64_t w_sd, float bias, float* scores, float* xp, float* xm) {
  if (std::is_same<Ty, F32>::value && sd == 1 && w_sd == 1) {
    const float *z = reinterpret_cast<const float*>(z_b), *wf = reinterpret_cast<const float*>(w);
    pool_scores(z, st, T, K, wf, bias, scores);
    pool_sums(z, st, T, K, scores, xp, xm);
    return;
  }
  for (int64_t t = 0; t < T; ++t)
    scores[t] = attn_pool_score_partial<Ty>(z_b + t * st, sd, w, w_sd, K, 0, 1) + bias;
  std::fill(xp, xp + K, 0.f);
  std::fill(xm, xm + K, 0.f);
  for (int64_t t = 0; t < T; ++t) {
    const auto* z_t = z_b + t * st;
    for (int64_t d = 0; d < K; ++d) {
      const float v = Ty::load(z_t[d * sd]);
      xp[d] += scores[t] * v;
      xm[d] += v;
    }
  }
  const float Tf = static_cast<float>(T);
  for (int64_t d = 0; d < K; ++d) xm[d] /= Tf;
}

// Pool modality m (0 video, 1 audio) of batch row b into xp [K], xm [K]; returns K.
template <typename Ty>
int64_t pool_modality(const FusionHeadArgs& a, int m, int64_t b, float* scores, float* xp, float* xm) {
  using S = typename Ty::storage;
  const bool v = m == 0;
  const S* z = static_cast<const S*>(v ? a.zv : a.za) + b * (v ? a.zv_sb : a.za_sb);
  const int64_t K = v ? a.dv : a.da;
  const float bias = Ty::load(*static_cast<const S*>(v ? a.bva : a.baa));
  pool_one<Ty>(z, v ? a.zv_st : a.za_st, v ? a.zv_sd : a.za_sd, v ? a.Tv : a.Ta, K,
               static_cast<const S*>(v ? a.wva : a.waa), v ? a.wva_sd : a.waa_sd, bias, scores, xp, xm);
  return K;
}

// Offsets of modality m's pooled and mean vectors in a row of X = [pooled_v | pooled_a | mean_v | mean_a].
inline int64_t x_pooled_off(const FusionHeadArgs& a, int m) { return m == 0 ? 0 : a.dv; }
inline int64_t x_mean_off(const FusionHeadArgs& a, int m) { return m == 0 ? a.dv + a.da : 2 * a.dv + a.da; }

// The weight row as contiguous floats: the row itself for unit-stride float32, else a converted copy
// (unit-stride 16-bit rows widened by cpu_convert.h's vector loops: the same exact values as Ty::load, which
// as an element loop made the bf16 head at B = 1 slower than the fp32 one reading twice the bytes).
template <typename Ty>
const float* row_as_float(const void* W, int64_t n, int64_t sn, int64_t sk, int64_t K, float* buf) {
  using S = typename Ty::storage;
  const S* row = static_cast<const S*>(W) + n * sn;
  if (std::is_same<Ty, F32>::value && sk == 1) return reinterpret_cast<const float*>(row);
  if (sk == 1) {
    row_to_f32(row, std::is_same<Ty, BF16>::value ? kBFloat16 : kFloat16, buf, K);
    return buf;
  }
  for (int64_t k = 0; k < K; ++k) buf[k] = Ty::load(row[k * sk]);
  return buf;
}

// The two rows of the folded gate W_g [2, 2dm] as floats (converted into buf [2, 2dm] when needed).
template <typename Ty>
void gate_rows(const FusionHeadArgs& a, float* buf, const float** wg) {
  for (int j = 0; j < 2; ++j) wg[j] = row_as_float<Ty>(a.Wg, j, a.Wg_sn, a.Wg_sk, 2 * a.dm, buf + j * 2 * a.dm);
}

// ------------------------------------------------------------------ GEMV form (B < kGemmMinB)

// Weight rows in groups of equal K, walked as one list: the first row after e weight elements. Threads
// split such a list at equal element counts (rows of W_v, W_mv hold dv elements, of W_a, W_ma da).
struct RowList {
  int n;
  int64_t rows[3], ks[3];
  int64_t elems() const {
    int64_t e = 0;
    for (int s = 0; s < n; ++s) e += rows[s] * ks[s];
    return e;
  }
  int64_t row_at(int64_t e) const {
    int64_t r = 0;
    for (int s = 0; s < n; ++s) {
      if (e < rows[s] * ks[s]) return r + (e + ks[s] - 1) / ks[s];
      e -= rows[s] * ks[s];
      r += rows[s];
    }
    return r;
  }
};

// The GEMV form. Phases: 1 pooling; 2 u_v, u_a (their 2dm rows); 3 the gate and z_f, computed by every
// thread for itself; 4 H_v, H_a and H_m as one list of rows, so that one barrier fewer waits on the
// slower thread. Each thread streams one contiguous range of rows per phase, of equal element counts:
// handing rows out dynamically (guided, chunks of 8 rows) measured ~10% slower, the prefetch of one
// thread running into the other's rows.
template <typename Ty>
void run_gemv(const FusionHeadArgs& args) {
  using S = typename Ty::storage;
  FusionHeadArgs a = args;
  const int64_t X = fh_x_width(a), kmax = std::max({a.dv, a.da, a.dm}), tmax = std::max(a.Tv, a.Ta);
  const int64_t shared = round_line(a.B * (X + 2 * a.dm));  // X [B, X], u [B, 2dm]
  // per thread: a converted weight row [kmax], scores [tmax], dots [B], z_f [B, dm], gate rows [2, 2dm]
  const int64_t per = round_line(kmax + tmax + a.B + a.B * a.dm + 4 * a.dm);
  float* s = scratch(static_cast<size_t>(shared + omp_get_max_threads() * per));
  a.work = s;
  const RowList u_rows{2, {a.dm, a.dm}, {a.dv, a.da}};
  const RowList h_rows{3, {a.D, a.D, a.D}, {a.dv, a.da, a.dm}};
  const Kernels& kern = kernels();
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* wbuf = s + shared + t * per;
    float *scores = wbuf + kmax, *o = scores + tmax, *zf = o + a.B, *wgbuf = zf + a.B * a.dm;

    // 1: attention-pooled and mean vectors, one (batch row, modality) per task.
#pragma omp for schedule(static)
    for (int64_t task = 0; task < 2 * a.B; ++task) {
      const int m = static_cast<int>(task % 2);
      float* xb = fh_x(a) + task / 2 * X;
      pool_modality<Ty>(a, m, task / 2, scores, xb + x_pooled_off(a, m), xb + x_mean_off(a, m));
    }
    // 2: u_v, u_a (rows 2D.. of fh_segment's order).
    int64_t r1 = u_rows.row_at(u_rows.elems() * (t + 1) / nt);
    for (int64_t r = u_rows.row_at(u_rows.elems() * t / nt); r < r1; ++r) {
      const FhSegment sg = fh_segment(a, 2 * a.D + r);
      kern.gemv(row_as_float<Ty>(sg.W, sg.n, sg.sn, sg.sk, sg.K, wbuf), fh_x(a) + sg.x_off, X, sg.K, a.B, o);
      for (int64_t b = 0; b < a.B; ++b) fh_store_segment<Ty>(a, sg, b, o[b]);
    }
#pragma omp barrier
    // 3: the gate and z_f [B, dm]: a few thousand FMAs per batch row, less than a barrier.
    const float* wg[2];
    gate_rows<Ty>(a, wgbuf, wg);
    const S* bg = static_cast<const S*>(a.bg);
    for (int64_t b = 0; b < a.B; ++b) {
      const float* u_b = fh_u(a) + b * 2 * a.dm;
      const float g0 = dotf(wg[0], u_b, 2 * a.dm) + Ty::load(bg[0]);
      const float g1 = dotf(wg[1], u_b, 2 * a.dm) + Ty::load(bg[1]);
      for (int64_t k = 0; k < a.dm; ++k) zf[b * a.dm + k] = g0 * u_b[k] + g1 * u_b[a.dm + k];
    }
    // 4: H_v, H_a (rows 0..2D of fh_segment's order), then H_m = W_mp z_f + b_mp.
    r1 = h_rows.row_at(h_rows.elems() * (t + 1) / nt);
    const S* bmp = static_cast<const S*>(a.bmp);
    for (int64_t r = h_rows.row_at(h_rows.elems() * t / nt); r < r1; ++r) {
      if (r < 2 * a.D) {
        const FhSegment sg = fh_segment(a, r);
        kern.gemv(row_as_float<Ty>(sg.W, sg.n, sg.sn, sg.sk, sg.K, wbuf), fh_x(a) + sg.x_off, X, sg.K, a.B, o);
        for (int64_t b = 0; b < a.B; ++b) fh_store_segment<Ty>(a, sg, b, o[b]);
      } else {
        const int64_t n = r - 2 * a.D;
        kern.gemv(row_as_float<Ty>(a.Wmp, n, a.Wmp_sn, a.Wmp_sk, a.dm, wbuf), zf, a.dm, a.dm, a.B, o);
        for (int64_t b = 0; b < a.B; ++b) fh_store_out<Ty>(a, b, 0, n, o[b] + Ty::load(bmp[n]));
      }
    }
  }
}

// ------------------------------------------------------------------ GEMM form (B >= kGemmMinB)

// dst[d * ld + i] = src[i * ss + d] for i < kPadB, d < K: a block of pooled rows into X^T.
AFFECTRT_CLONES void transpose_block(const float* src, int64_t ss, int64_t K, float* dst, int64_t ld) {
  for (int64_t d = 0; d < K; ++d)
#pragma omp simd
    for (int i = 0; i < kPadB; ++i) dst[d * ld + i] = src[i * ss + d];
}

// For kPadB batch columns: g_j = W_g[j] · u^T[:, i] + b_g[j], z_f^T[k, i] = g_0 u^T[k, i] + g_1 u^T[dm+k, i]
// (ut, zft point at the block's first column; rows ld apart).
AFFECTRT_CLONES void gate_block(const float* wg0, const float* wg1, float bg0, float bg1, const float* ut,
                                int64_t ld, int64_t dm, float* zft) {
  float g0[kPadB] = {}, g1[kPadB] = {};
  for (int64_t k = 0; k < 2 * dm; ++k) {
    const float* u = ut + k * ld;
#pragma omp simd
    for (int i = 0; i < kPadB; ++i) g0[i] += wg0[k] * u[i], g1[i] += wg1[k] * u[i];
  }
  for (int i = 0; i < kPadB; ++i) g0[i] += bg0, g1[i] += bg1;
  for (int64_t k = 0; k < dm; ++k)
#pragma omp simd
    for (int i = 0; i < kPadB; ++i) zft[k * ld + i] = g0[i] * ut[k * ld + i] + g1[i] * ut[(dm + k) * ld + i];
}

// Float pointers to the kNR weight rows n0.. of W [N, K] (rows past N repeat the last one: computed into
// the tile, never stored), converted into buf [kNR, K] unless float32 with a unit stride.
template <typename Ty>
void tile_rows(const void* W, int64_t n0, int64_t N, int64_t sn, int64_t sk, int64_t K, float* buf,
               const float** w) {
  for (int j = 0; j < kNR; ++j)
    w[j] = j > 0 && n0 + j >= N ? w[j - 1] : row_as_float<Ty>(W, n0 + j, sn, sk, K, buf + j * K);
}

// Store finished rows n0.. (< N; nr = min(kChunk, N - n0) of them, [nr, Bp] in c) plus bias: into
// out[b, rows[b, j_out], n] when u_col < 0, else into u^T[u_col + n, b] ([2dm, Bp], padding columns zero).
// For out, batch row outermost: each destination row gets nr contiguous values at once. Storing per
// kNR-row tile instead wrote 24 bytes into each of B lines 43 KB apart at the released D (two L1 sets:
// every store missed L1): ~13% of phase 2 on the 2-core Xeon.
template <typename Ty>
void store_rows(const FusionHeadArgs& a, const float* c, int64_t Bp, int64_t n0, int64_t N, const void* bias,
                int j_out, int64_t u_col, float* ut) {
  using S = typename Ty::storage;
  const int nr = static_cast<int>(std::min<int64_t>(kChunk, N - n0));
  float bv[kChunk];
  for (int j = 0; j < nr; ++j) bv[j] = Ty::load(static_cast<const S*>(bias)[n0 + j]);
  if (u_col >= 0) {
    for (int j = 0; j < nr; ++j) {
      float* dst = ut + (u_col + n0 + j) * Bp;
      for (int64_t b = 0; b < a.B; ++b) dst[b] = c[j * Bp + b] + bv[j];
      for (int64_t b = a.B; b < Bp; ++b) dst[b] = 0.f;
    }
    return;
  }
  for (int64_t b = 0; b < a.B; ++b) {
    S* dst = static_cast<S*>(a.out) + b * a.o_sb + a.rows[b * 3 + j_out] * a.o_sl + n0 * a.o_sd;
    for (int j = 0; j < nr; ++j) dst[j * a.o_sd] = Ty::store(c[j * Bp + b] + bv[j]);
  }
}

// c [nr, Bp] = rows n0.. of W [N, K] times xt [K, Bp], kNR rows per register tile (nr as in store_rows).
template <typename Ty>
void gemm_rows(const Kernels& kern, const void* W, int64_t n0, int64_t N, int64_t sn, int64_t sk, int64_t K,
               const float* xt, int64_t Bp, int64_t B, float* wbuf, float* c) {
  const float* w[kNR];
  const int64_t n1 = std::min(N, n0 + kChunk);
  for (int64_t n = n0; n < n1; n += kNR) {
    tile_rows<Ty>(W, n, N, sn, sk, K, wbuf, w);
    kern.gemm(w, xt, Bp, K, B, c + (n - n0) * Bp, Bp);
  }
}

template <typename Ty>
void run_gemm(const FusionHeadArgs& a) {
  using S = typename Ty::storage;
  const int64_t X = fh_x_width(a), Bp = (a.B + kPadB - 1) / kPadB * kPadB;
  const int64_t kpool = std::max(a.dv, a.da), kmax = std::max(kpool, a.dm), tmax = std::max(a.Tv, a.Ta);
  const int64_t shared = round_line(Bp * (X + 3 * a.dm));  // X^T [X, Bp], u^T [2dm, Bp], z_f^T [dm, Bp]
  // per thread: rows [kChunk, Bp], weight rows [kNR, kmax], pooled rows [kPadB, 2 kpool], scores, gate rows
  const int64_t per = round_line(kChunk * Bp + kNR * kmax + kPadB * 2 * kpool + tmax + 4 * a.dm);
  float* s = scratch(static_cast<size_t>(shared + omp_get_max_threads() * per));
  float *xt = s, *ut = xt + X * Bp, *zft = ut + 2 * a.dm * Bp;
  const Kernels& kern = kernels();
  // Phase 2's chunks, kChunk rows each, of W_v, W_a (-> out rows video, audio), W_mv, W_ma (-> u^T).
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
  int64_t first_chunk[5] = {0};
  for (int m = 0; m < 4; ++m) first_chunk[m + 1] = first_chunk[m] + (mats[m].N + kChunk - 1) / kChunk;
  const int64_t nblk = Bp / kPadB;
#pragma omp parallel
  {
    float* tile = s + shared + omp_get_thread_num() * per;
    float *wbuf = tile + kChunk * Bp, *blk = wbuf + kNR * kmax, *scores = blk + kPadB * 2 * kpool;
    float* wgbuf = scores + tmax;

    // 1: pool kPadB batch rows of one modality per task into blk [kPadB, 2K] (pooled | mean; rows past B
    // zero), then write both halves transposed into X^T.
#pragma omp for schedule(static)
    for (int64_t task = 0; task < 2 * nblk; ++task) {
      const int m = static_cast<int>(task % 2);
      const int64_t b0 = task / 2 * kPadB, K = m == 0 ? a.dv : a.da;
      for (int64_t i = 0; i < kPadB; ++i) {
        if (b0 + i < a.B)
          pool_modality<Ty>(a, m, b0 + i, scores, blk + i * 2 * K, blk + i * 2 * K + K);
        else
          std::fill(blk + i * 2 * K, blk + (i + 1) * 2 * K, 0.f);
      }
      transpose_block(blk, 2 * K, K, xt + x_pooled_off(a, m) * Bp + b0, Bp);
      transpose_block(blk + K, 2 * K, K, xt + x_mean_off(a, m) * Bp + b0, Bp);
    }
    // 2: H_v, H_a, u_v, u_a, kChunk rows per task. Dynamic: the matrices' K differ.
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < first_chunk[4]; ++t) {
      int m = 0;
      while (t >= first_chunk[m + 1]) ++m;
      const Mat& M = mats[m];
      const int64_t n0 = (t - first_chunk[m]) * kChunk;
      gemm_rows<Ty>(kern, M.W, n0, M.N, M.sn, M.sk, M.K, xt + M.x_off * Bp, Bp, a.B, wbuf, tile);
      store_rows<Ty>(a, tile, Bp, n0, M.N, M.bias, M.j_out, M.u_col, ut);
    }
    // 3: the folded gate and z_f^T, kPadB batch columns per task.
    const float* wg[2];
    gate_rows<Ty>(a, wgbuf, wg);
    const S* bg = static_cast<const S*>(a.bg);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nblk; ++c)
      gate_block(wg[0], wg[1], Ty::load(bg[0]), Ty::load(bg[1]), ut + c * kPadB, Bp, a.dm, zft + c * kPadB);
    // 4: H_m = W_mp z_f + b_mp.
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < (a.D + kChunk - 1) / kChunk; ++t) {
      gemm_rows<Ty>(kern, a.Wmp, t * kChunk, a.D, a.Wmp_sn, a.Wmp_sk, a.dm, zft, Bp, a.B, wbuf, tile);
      store_rows<Ty>(a, tile, Bp, t * kChunk, a.D, a.bmp, 0, -1, nullptr);
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

// a.work is not read: the CPU form keeps its own scratch (see the top of this file). a.rows may be null:
// out is then [B, 3, D] and row j goes to out[b, j] (saves the caller building an index tensor per call).
const char* fusion_head_cpu(const FusionHeadArgs& args, int dtype) {
  if (args.B == 0) return nullptr;
  if (args.Tv <= 0 || args.Ta <= 0) return "fusion_head_cpu: z_video and z_audio need at least one time step";
  FusionHeadArgs a = args;
  if (a.rows == nullptr) {
    static thread_local std::vector<int64_t> identity;
    for (int64_t i = static_cast<int64_t>(identity.size()); i < 3 * a.B; ++i) identity.push_back(i % 3);
    a.rows = identity.data();
  }
  switch (dtype) {
    case kFloat32: run<F32>(a); return nullptr;
    case kFloat16: run<F16>(a); return nullptr;
    case kBFloat16: run<BF16>(a); return nullptr;
    default: return "fusion_head_cpu: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  }
}

}  // namespace affectrt
