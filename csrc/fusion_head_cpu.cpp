// CPU launcher for fusion_head.h: one OpenMP region, four phases separated by the loops' barriers.
// Phase 2 and 4 walk weight rows: each row is read once (converted to float once when needed) and
// applied to every batch row, four at a time, so at B=64 the weights stream through the cache once.
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

template <typename Ty>
void pool_rows(const FusionHeadArgs& a, const void* z, int64_t sb, int64_t st, int64_t sd, int64_t T, int64_t K,
               const void* watt, int64_t watt_sd, const void* batt, int64_t pooled_off, int64_t mean_off, int64_t b,
               std::vector<float>& scores) {
  using S = typename Ty::storage;
  const S* z_b = static_cast<const S*>(z) + b * sb;
  const S* w = static_cast<const S*>(watt);
  const float bias = Ty::load(*static_cast<const S*>(batt));
  for (int64_t t = 0; t < T; ++t) scores[t] = attn_pool_score_partial<Ty>(z_b + t * st, sd, w, watt_sd, K, 0, 1) + bias;
  float* x = fh_x(a) + b * fh_x_width(a);
  for (int64_t d = 0; d < K; ++d) {
    x[pooled_off + d] = attn_pool_out_at<Ty>(z_b, st, sd, scores.data(), T, d);
    x[mean_off + d] = fh_mean_at<Ty>(z_b, st, sd, T, d);
  }
}

template <typename Ty>
void run(const FusionHeadArgs& a) {
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
