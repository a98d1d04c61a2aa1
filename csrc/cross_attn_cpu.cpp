// CPU launcher for cross_attn.h: OpenMP over (batch row, key split) pairs, then over rows for the combine.
// Each pass converts a block of kBlockN keys to a float tile once (it stays in L1/L2) and runs all R query
// rows over it, four rows at a time so each x element loaded feeds four dot products. Neither the
// [R, Nk] score matrix nor K/V exist: per thread there is one [kBlockN, E] tile and [4, kBlockN] scores.
// The hot loops are compiled twice, for AVX2+FMA and for the baseline ISA, and picked at run time.
#include <math.h>

#include <vector>

#include "cross_attn.h"

namespace affectrt {
namespace {

constexpr int64_t kBlockN = 32;
constexpr int64_t kRows = 4;

struct Scratch {
  std::vector<float> tile, scores;
};

// One (b, split) pass: partial acc [R, E], m [R], l [R] into the work buffer.
template <typename Ty>
__attribute__((always_inline)) inline void pass(const CrossAttnArgs& a, int64_t b, int64_t s, Scratch& sc) {
  using S = typename Ty::storage;
  const int64_t E = a.E, R = a.R;
  int64_t lo, hi;
  cross_attn_split_range(a.Nk, a.splits, kBlockN, s, &lo, &hi);
  const int64_t item = b * a.splits + s;
  float* acc = a.work + item * R * E;
  float* m = a.work + a.B * a.splits * R * E + item * R;
  float* l = m + a.B * a.splits * R;
  for (int64_t r = 0; r < R; ++r) m[r] = -INFINITY, l[r] = 0.f;
  for (int64_t i = 0; i < R * E; ++i) acc[i] = 0.f;
  const S* x_b = static_cast<const S*>(a.x) + b * a.x_sb;
  const uint8_t* keep_b = a.keep ? a.keep + b * a.keep_sb : nullptr;
  const float* qt_b = a.qt + b * R * E;
  float* tile = sc.tile.data();
  float* sco = sc.scores.data();
  for (int64_t j0 = lo; j0 < hi; j0 += kBlockN) {
    const int64_t nb = hi - j0 < kBlockN ? hi - j0 : kBlockN;
    for (int64_t j = 0; j < nb; ++j) {
      const S* xj = x_b + (j0 + j) * a.x_sn;
      float* t = tile + j * E;
      for (int64_t e = 0; e < E; ++e) t[e] = Ty::load(xj[e * a.x_se]);
    }
    for (int64_t r0 = 0; r0 < R; r0 += kRows) {
      const int64_t nr = R - r0 < kRows ? R - r0 : kRows;
      // rows past R repeat the last row: computed, never used
      const float* q0 = qt_b + (r0 + 0) * E;
      const float* q1 = qt_b + (r0 + (nr > 1 ? 1 : 0)) * E;
      const float* q2 = qt_b + (r0 + (nr > 2 ? 2 : 0)) * E;
      const float* q3 = qt_b + (r0 + (nr > 3 ? 3 : 0)) * E;
      for (int64_t j = 0; j < nb; ++j) {
        const float* t = tile + j * E;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t e = 0; e < E; ++e) {
          const float xv = t[e];
          s0 += q0[e] * xv;
          s1 += q1[e] * xv;
          s2 += q2[e] * xv;
          s3 += q3[e] * xv;
        }
        sco[0 * kBlockN + j] = cross_attn_mask(s0, keep_b, a.keep_sn, j0 + j);
        sco[1 * kBlockN + j] = cross_attn_mask(s1, keep_b, a.keep_sn, j0 + j);
        sco[2 * kBlockN + j] = cross_attn_mask(s2, keep_b, a.keep_sn, j0 + j);
        sco[3 * kBlockN + j] = cross_attn_mask(s3, keep_b, a.keep_sn, j0 + j);
      }
      for (int64_t k = 0; k < nr; ++k) {
        const int64_t r = r0 + k;
        float* p = sco + k * kBlockN;
        float tile_max = -INFINITY;
        for (int64_t j = 0; j < nb; ++j) tile_max = p[j] > tile_max ? p[j] : tile_max;
        const float alpha = cross_attn_rescale(&m[r], &l[r], tile_max);
        float* acc_r = acc + r * E;
        if (alpha != 1.f) {
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) acc_r[e] *= alpha;
        }
        float sum = 0.f;
        for (int64_t j = 0; j < nb; ++j) sum += (p[j] = expf(p[j] - m[r]));
        l[r] += sum;
        for (int64_t j = 0; j < nb; ++j) {
          const float pj = p[j];
          if (pj == 0.f) continue;  // padded keys in a row with real ones
          const float* t = tile + j * E;
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) acc_r[e] += pj * t[e];
        }
      }
    }
  }
}

template <typename Ty>
__attribute__((target("avx2,fma"))) void pass_avx2(const CrossAttnArgs& a, int64_t b, int64_t s, Scratch& sc) {
  pass<Ty>(a, b, s, sc);
}

template <typename Ty>
void pass_base(const CrossAttnArgs& a, int64_t b, int64_t s, Scratch& sc) {
  pass<Ty>(a, b, s, sc);
}

template <typename Ty>
void run(const CrossAttnArgs& a) {
#if defined(__x86_64__) || defined(__i386__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool avx2 = false;
#endif
  const int64_t items = a.B * a.splits;
#pragma omp parallel
  {
    Scratch sc{std::vector<float>(static_cast<size_t>(kBlockN * a.E)), std::vector<float>(kRows * kBlockN)};
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      if (avx2)
        pass_avx2<Ty>(a, it / a.splits, it % a.splits, sc);
      else
        pass_base<Ty>(a, it / a.splits, it % a.splits, sc);
    }
  }
  // log-sum-exp combine of the splits, one (b, r) row at a time
  const float* m_all = a.work + a.B * a.splits * a.R * a.E;
  const float* l_all = m_all + a.B * a.splits * a.R;
#pragma omp parallel
  {
    std::vector<float> w(static_cast<size_t>(a.splits));
#pragma omp for schedule(static)
    for (int64_t br = 0; br < a.B * a.R; ++br) {
      const int64_t b = br / a.R, r = br % a.R;
      const int64_t first = b * a.splits * a.R + r;  // (b, split 0, r)
      float M;
      const float L = cross_attn_combine_weights(m_all + first, l_all + first, a.R, a.splits, w.data(), &M);
      float* out = a.a + br * a.E;
      for (int64_t e = 0; e < a.E; ++e) out[e] = 0.f;
      for (int64_t s = 0; s < a.splits; ++s) {
        const float ws = w[s] / L;
        const float* acc = a.work + (first + s * a.R) * a.E;
        for (int64_t e = 0; e < a.E; ++e) out[e] += ws * acc[e];
      }
      a.m[br] = M;
      a.logl[br] = logf(L);
    }
  }
}

}  // namespace

const char* cross_attn_cpu(const CrossAttnArgs& a, int dtype) {
  if (a.B == 0 || a.R == 0 || a.E == 0) return nullptr;
  if (a.Nk < 1) return "cross_attn_cpu: x must have at least one key (Nk >= 1)";
  if (a.splits < 1) return "cross_attn_cpu: splits must be >= 1";
  switch (dtype) {
    case kFloat32: run<F32>(a); return nullptr;
    case kFloat16: run<F16>(a); return nullptr;
    case kBFloat16: run<BF16>(a); return nullptr;
    default: return "cross_attn_cpu: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  }
}

}  // namespace affectrt
