// Few-query cross-attention core (Q-Former pre-fusion / token compression), single source for the CPU and
// CUDA builds. The K/V projections are absorbed (see kernels/cross_attn.py and affectrt/ops/cross_attn.py):
// with q̃_r = q_r W_k,h / √d the rows r = (head, query) attend over keys = values = x itself,
//
//   s[b, r, j] = q̃[b, r, :] · x[b, j, :]        (-1e30 instead where keep[b, j] == 0)
//   A[b, r, :] = Σ_j softmax_j(s[b, r, :]) x[b, j, :]
//
// so K and V are never formed. The keys of each batch row are split into `splits` ranges (flash-decoding);
// each (b, split) pass keeps an online softmax per row and writes a partial (acc, m, l) into `work`; a
// combine step merges the splits with a log-sum-exp reduction into A and the row statistics m, log l.
// x is read through element strides in its storage dtype; everything else is contiguous float32.
#pragma once

#include <math.h>

#include "common.h"

namespace affectrt {

// The score of a padded key: replaced, not added, so a fully padded row attends uniformly to all keys.
constexpr float kCrossAttnMaskedScore = -1.0e30f;

struct CrossAttnArgs {
  const float* qt;      // [B, R, E] contiguous
  const void* x;        // [B, Nk, E], element strides x_sb, x_sn, x_se
  const uint8_t* keep;  // [B, Nk] (strides keep_sb, keep_sn), nonzero = attend; nullptr = no padding
  float* a;             // [B, R, E] contiguous, out
  float* m;             // [B, R] out: row max of the scores
  float* logl;          // [B, R] out: log Σ_j exp(s - m)
  float* work;          // [B, splits, R, E + 2]: per-split acc, then m and l
  int64_t B, R, Nk, E, splits;
  int64_t x_sb, x_sn, x_se;
  int64_t keep_sb, keep_sn;
};

// The work buffer's float count for given sizes (the Python side allocates it).
AFFECTRT_HD inline int64_t cross_attn_work_floats(int64_t B, int64_t R, int64_t E, int64_t splits) {
  return B * splits * R * (E + 2);
}

// Keys [begin, end) of split `s` when Nk keys are cut into `splits` ranges of block-multiple length.
AFFECTRT_HD inline void cross_attn_split_range(int64_t Nk, int64_t splits, int64_t block, int64_t s,
                                               int64_t* begin, int64_t* end) {
  const int64_t blocks = (Nk + block - 1) / block;
  const int64_t per = ((blocks + splits - 1) / splits) * block;
  *begin = s * per < Nk ? s * per : Nk;
  *end = *begin + per < Nk ? *begin + per : Nk;
}

AFFECTRT_HD inline float cross_attn_mask(float s, const uint8_t* keep_b, int64_t keep_sn, int64_t j) {
  return (keep_b == nullptr || keep_b[j * keep_sn] != 0) ? s : kCrossAttnMaskedScore;
}

// Online softmax: fold a tile whose largest score is tile_max into (m, l); returns the factor that
// rescales the running accumulator. m starts at -INFINITY, l at 0.
AFFECTRT_HD inline float cross_attn_rescale(float* m, float* l, float tile_max) {
  const float m_new = tile_max > *m ? tile_max : *m;
  const float alpha = expf(*m - m_new);  // exp(-inf) = 0 on the first tile
  *l *= alpha;
  *m = m_new;
  return alpha;
}

// Combine of one row over the splits: weights w_s = exp(m_s - M) with M = max m_s; returns Σ w_s l_s.
// m_s and l_s are read with stride `step` floats (the work layout). w must hold `splits` floats.
AFFECTRT_HD inline float cross_attn_combine_weights(const float* m_s, const float* l_s, int64_t step,
                                                    int64_t splits, float* w, float* M) {
  float mx = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) mx = m_s[s * step] > mx ? m_s[s * step] : mx;
  float l = 0.f;
  for (int64_t s = 0; s < splits; ++s) {
    w[s] = expf(m_s[s * step] - mx);
    l += w[s] * l_s[s * step];
  }
  *M = mx;
  return l;
}

// Launchers; each returns nullptr on success or a static error message.
const char* cross_attn_cpu(const CrossAttnArgs& a, int dtype);
const char* cross_attn_cuda(const CrossAttnArgs& a, int dtype, uintptr_t stream);

}  // namespace affectrt
