// The fused fusion head (MODEL_SPEC §1.4-1.5a), single source for the CPU and CUDA builds.
//
//   H_v = W_v (Σ_t (z_v,t·w_va + b_va) z_v,t) + c_v        -> out[b, rows[b,2], :]
//   H_a = W_a (Σ_t (z_a,t·w_aa + b_aa) z_a,t) + c_a        -> out[b, rows[b,1], :]
//   u   = [W_mv mean_t z_v + b_mv ; W_ma mean_t z_a + b_ma]   (float scratch [B, 2dm])
//   g   = W_g u + b_g                                         (W_g = W2·W1 folded by the caller)
//   H_m = W_mp (g0 u_v + g1 u_a) + b_mp                      -> out[b, rows[b,0], :]
//
// Phases (the dependencies): 1 pool each row (pooled and mean vectors, float scratch); 2 the four GEMVs
// H_v, H_a, u_v, u_a, each weight row read once and applied to every batch row; 3 the gate and the gated
// sum z_f; 4 the W_mp GEMV. Accumulation is float32 for every storage dtype.
#pragma once

#include "attn_pool.h"
#include "common.h"

namespace affectrt {

struct FusionHeadArgs {
  const void *zv, *za;                    // [B, Tv, dv], [B, Ta, da], any strides
  const void *wva, *bva, *Wv, *cv;        // [dv], [1], [D, dv], [D]
  const void *waa, *baa, *Wa, *ca;        // [da], [1], [D, da], [D]
  const void *Wmv, *bmv, *Wma, *bma;      // [dm, dv], [dm], [dm, da], [dm]
  const void *Wg, *bg, *Wmp, *bmp;        // [2, 2dm], [2], [D, dm], [D]
  void* out;                              // [B, L, D], strides o_*
  const int64_t* rows;                    // [B, 3] contiguous: row of (multi, audio, video) in L;
                                          //   CPU: may be null, rows 0, 1, 2 of L = 3
  float* work;                            // B * (2dv + 2da + 3dm) floats (CUDA; the CPU has its own)
  int64_t B, Tv, Ta, dv, da, dm, D;
  int64_t zv_sb, zv_st, zv_sd, za_sb, za_st, za_sd, wva_sd, waa_sd;
  int64_t Wv_sn, Wv_sk, Wa_sn, Wa_sk, Wmv_sn, Wmv_sk, Wma_sn, Wma_sk, Wg_sn, Wg_sk, Wmp_sn, Wmp_sk;
  int64_t o_sb, o_sl, o_sd;
};

// Scratch layout: per batch row X = [pooled_v | pooled_a | mean_v | mean_a]; then u [B, 2dm]; z_f [B, dm].
AFFECTRT_HD inline int64_t fh_x_width(const FusionHeadArgs& a) { return 2 * a.dv + 2 * a.da; }
AFFECTRT_HD inline float* fh_x(const FusionHeadArgs& a) { return a.work; }
AFFECTRT_HD inline float* fh_u(const FusionHeadArgs& a) { return a.work + a.B * fh_x_width(a); }
AFFECTRT_HD inline float* fh_zf(const FusionHeadArgs& a) { return fh_u(a) + a.B * 2 * a.dm; }

// mean_t z[b, t, d]
template <typename Ty>
AFFECTRT_HD inline float fh_mean_at(const typename Ty::storage* z_b, int64_t z_st, int64_t z_sd, int64_t T,
                                    int64_t d) {
  float acc = 0.f;
  for (int64_t t = 0; t < T; ++t) acc += Ty::load(z_b[t * z_st + d * z_sd]);
  return acc / static_cast<float>(T);
}

// One of the 2D + 2dm rows of phase 2: its weight, bias, input offset in X and destination.
struct FhSegment {
  const void* W;
  const void* bias;
  int64_t sn, sk, K, x_off, n;
  int kind;  // 0..2: out row j = kind (1 audio, 2 video); 3: u column n_off
  int64_t u_col;
};

AFFECTRT_HD inline FhSegment fh_segment(const FusionHeadArgs& a, int64_t r) {
  if (r < a.D) return {a.Wv, a.cv, a.Wv_sn, a.Wv_sk, a.dv, 0, r, 2, 0};
  r -= a.D;
  if (r < a.D) return {a.Wa, a.ca, a.Wa_sn, a.Wa_sk, a.da, a.dv, r, 1, 0};
  r -= a.D;
  if (r < a.dm) return {a.Wmv, a.bmv, a.Wmv_sn, a.Wmv_sk, a.dv, a.dv + a.da, r, 3, r};
  r -= a.dm;
  return {a.Wma, a.bma, a.Wma_sn, a.Wma_sk, a.da, 2 * a.dv + a.da, r, 3, a.dm + r};
}

// Partial dot of weight row W[n, :] with a float vector over k = k_begin, k_begin + k_step, ... < K.
template <typename Ty>
AFFECTRT_HD inline float fh_dot_partial(const typename Ty::storage* w_row, int64_t sk, const float* x, int64_t K,
                                        int64_t k_begin, int64_t k_step) {
  float acc = 0.f;
  for (int64_t k = k_begin; k < K; k += k_step) acc += Ty::load(w_row[k * sk]) * x[k];
  return acc;
}

// Partial gate g_j = Σ_k W_g[j, k] u[k] over a strided subset of k (bias added by the caller).
template <typename Ty>
AFFECTRT_HD inline float fh_gate_partial(const FusionHeadArgs& a, int j, const float* u_b, int64_t k_begin,
                                         int64_t k_step) {
  const auto* wg = static_cast<const typename Ty::storage*>(a.Wg) + j * a.Wg_sn;
  return fh_dot_partial<Ty>(wg, a.Wg_sk, u_b, 2 * a.dm, k_begin, k_step);
}

// Store one finished value of phase 2 (segment s, batch row b) or phase 4 (j = 0).
template <typename Ty>
AFFECTRT_HD inline void fh_store_out(const FusionHeadArgs& a, int64_t b, int j, int64_t n, float v) {
  auto* out = static_cast<typename Ty::storage*>(a.out);
  out[b * a.o_sb + a.rows[b * 3 + j] * a.o_sl + n * a.o_sd] = Ty::store(v);
}

template <typename Ty>
AFFECTRT_HD inline void fh_store_segment(const FusionHeadArgs& a, const FhSegment& s, int64_t b, float acc) {
  const float v = acc + Ty::load(static_cast<const typename Ty::storage*>(s.bias)[s.n]);
  if (s.kind == 3)
    fh_u(a)[b * 2 * a.dm + s.u_col] = v;
  else
    fh_store_out<Ty>(a, b, s.kind, s.n, v);
}

// Launchers; each returns nullptr on success or a static error message.
const char* fusion_head_cpu(const FusionHeadArgs& a, int dtype);
const char* fusion_head_cuda(const FusionHeadArgs& a, int dtype, uintptr_t stream);

}  // namespace affectrt
