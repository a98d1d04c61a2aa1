// Attention-pooling token compression (MODEL_SPEC §1.4), single source for the CPU and CUDA builds.
//
//   s[b, t]   = Σ_d z[b, t, d] · w[d] + bias          (raw scores: no softmax)
//   out[b, d] = Σ_t s[b, t] · z[b, t, d]
//
// Inputs are read through element strides (any layout torch can produce); accumulation is float32
// whatever the storage dtype; `out` is a contiguous [B, D] tensor of z's dtype.
#pragma once

#include "common.h"

namespace affectrt {

struct AttnPoolArgs {
  const void* z;     // [B, T, D]
  const void* w;     // [D], element stride w_sd
  const void* bias;  // one element
  void* out;         // [B, D] contiguous
  int64_t B, T, D;
  int64_t z_sb, z_st, z_sd;
  int64_t w_sd;
};

// Partial dot product of row z[b, t, :] with w over d = d_begin, d_begin + d_step, ... < D.
// The CPU calls it with (0, 1) for the full row; a CUDA warp calls it with (lane, 32) and reduces.
template <typename Ty>
AFFECTRT_HD inline float attn_pool_score_partial(const typename Ty::storage* z_row, int64_t z_sd,
                                                 const typename Ty::storage* w, int64_t w_sd, int64_t D,
                                                 int64_t d_begin, int64_t d_step) {
  float acc = 0.f;
  for (int64_t d = d_begin; d < D; d += d_step) acc += Ty::load(z_row[d * z_sd]) * Ty::load(w[d * w_sd]);
  return acc;
}

// One output element out[b, d] = Σ_t s_t · z[b, t, d], given the row's finished scores.
template <typename Ty>
AFFECTRT_HD inline float attn_pool_out_at(const typename Ty::storage* z_b, int64_t z_st, int64_t z_sd,
                                          const float* scores, int64_t T, int64_t d) {
  float acc = 0.f;
  for (int64_t t = 0; t < T; ++t) acc += scores[t] * Ty::load(z_b[t * z_st + d * z_sd]);
  return acc;
}

// Launchers; each returns nullptr on success or a static error message.
const char* attn_pool_cpu(const AttnPoolArgs& a, int dtype);
const char* attn_pool_cuda(const AttnPoolArgs& a, int dtype, uintptr_t stream);

}  // namespace affectrt
