// CPU launchers for decode_glue.h: OpenMP over groups of rows (attention: over rows × key/value heads), float32 loops
// GCC vectorises in each target clone (exp from vec_math.h).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "decode_glue.h"
#include "vec_math.h"

namespace affectrt {
namespace {

// Per-thread float scratch, grown when needed and never shrunk (a few KB at decode sizes).
float* tls(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

constexpr int64_t kLoraRows = 4;  // rows whose LoRA terms share each pass over B
constexpr int64_t kLoraCols = 32;  // columns of t kept in registers per row

// Columns j0 .. j0 + kLoraCols of R rows y_p = y + p·ldy in the [rank, n] layout: t_p = Σ_{r0 <= r < r1}
// a_p[r] B[r, ·] with t from 0 and r ascending, then y_p += t_p · s. The R·kLoraCols sums stay in registers
// and each B element loaded feeds R rows.
template <int R>
AFFECTRT_CLONES void lora_tile(float* y, int64_t ldy, int64_t a_col, const float* b, int64_t n, int64_t r0,
                               int64_t r1, int64_t j0, float s) {
  float t[R][kLoraCols] = {};
  for (int64_t r = r0; r < r1; ++r) {
    const float* br = b + r * n + j0;
    for (int p = 0; p < R; ++p) {
      const float ar = y[p * ldy + a_col + r];
#pragma omp simd
      for (int64_t i = 0; i < kLoraCols; ++i) t[p][i] += ar * br[i];
    }
  }
  for (int p = 0; p < R; ++p) {
    float* yj = y + p * ldy + j0;
#pragma omp simd
    for (int64_t i = 0; i < kLoraCols; ++i) yj[i] = yj[i] + t[p][i] * s;
  }
}

// y_p[0 .. n) += (Σ_r a_p[r] · B(r, ·)) · s for `rows` (<= kLoraRows) rows y_p = y + p·ldy, a_p = y_p + a_col,
// block by block (decode_glue.h): t = a B summed over r in float32 first, then added times the scale, as the
// packed modules compute z + (a @ B)·s. Every element's operations run in that order (t from 0, r ascending),
// whichever loop computes it. One row at a time, with t in memory, a 117-token prefill's gate/up term ran at
// ~25 GFLOP/s (112 of a 134 us call, 2-core Xeon): every row re-read the whole B from L2.
AFFECTRT_CLONES void lora_rows(float* y, int64_t ldy, int64_t rows, int64_t n, const DecLora& L) {
  if (L.b == nullptr) return;
  const float s = L.scale;
  for (int64_t blk = 0; blk < L.n_blocks; ++blk) {
    const int64_t* q = L.blocks + 4 * blk;
    const int64_t r0 = q[0], r1 = q[0] + q[1], c0 = q[2], c1 = q[2] + q[3] < n ? q[2] + q[3] : n;
    int64_t j0 = c0;
    if (!L.b_rows) {
      for (; j0 + kLoraCols <= c1; j0 += kLoraCols) {
        switch (rows) {
          case 4: lora_tile<4>(y, ldy, L.a_col, L.b, n, r0, r1, j0, s); break;
          case 3: lora_tile<3>(y, ldy, L.a_col, L.b, n, r0, r1, j0, s); break;
          case 2: lora_tile<2>(y, ldy, L.a_col, L.b, n, r0, r1, j0, s); break;
          default: lora_tile<1>(y, ldy, L.a_col, L.b, n, r0, r1, j0, s); break;
        }
      }
    }
    if (j0 == c1) continue;
    for (int64_t p = 0; p < rows; ++p) {
      float* yp = y + p * ldy;
      const float* a = yp + L.a_col;
      if (L.b_rows) {  // [n, rank]: a dot product per element
        for (int64_t j = j0; j < c1; ++j) {
          float t = 0.0f;
          for (int64_t r = r0; r < r1; ++r) t += a[r] * L.b[j * L.rank + r];
          yp[j] = yp[j] + t * s;
        }
        continue;
      }
      // the last (< kLoraCols) columns of a [rank, n] block, one row at a time
      const int64_t w = c1 - j0;
      float t[kLoraCols] = {};
      for (int64_t r = r0; r < r1; ++r) {
        const float ar = a[r];
        const float* br = L.b + r * n + j0;
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) t[i] += ar * br[i];
      }
#pragma omp simd
      for (int64_t i = 0; i < w; ++i) yp[j0 + i] = yp[j0 + i] + t[i] * s;
    }
  }
}

// out = x·cos + rotate_half(x)·sin for one head of D (rotate_half(x) = [-x2, x1]); each product rounded, then
// the sum, as torch's three elementwise ops.
AFFECTRT_CLONES void rope_head(const float* x, const float* c, const float* s, int64_t D, float* out) {
  const int64_t h = D / 2;
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    const float p = x[i] * c[i], q = -x[i + h] * s[i];
    out[i] = p + q;
  }
#pragma omp simd
  for (int64_t i = h; i < D; ++i) {
    const float p = x[i] * c[i], q = x[i - h] * s[i];
    out[i] = p + q;
  }
}

AFFECTRT_CLONES float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// softmax(scores)·V for one query: s[j] (masked slots -inf) -> out [D].
AFFECTRT_CLONES void softmax_v(float* s, int64_t n, const float* v, int64_t D, float* out) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float e = s[j] == -INFINITY ? 0.0f : exp_f32(s[j] - mx);
    s[j] = e;
    sum += e;
  }
  for (int64_t i = 0; i < D; ++i) out[i] = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    if (s[j] == 0.0f) continue;
    const float p = s[j];
    const float* vj = v + j * D;
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) out[i] += p * vj[i];
  }
  const float inv = 1.0f / sum;  // flash attention normalises once, at the end
#pragma omp simd
  for (int64_t i = 0; i < D; ++i) out[i] *= inv;
}

AFFECTRT_CLONES void rms_norm_row(const float* x, const float* w, int64_t d, float eps, float* out) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < d; ++i) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = x[i] * r * w[i];
}

AFFECTRT_CLONES void add_row(float* x, const float* y, int64_t d) {
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) x[i] = x[i] + y[i];
}

AFFECTRT_CLONES void silu_mul_row(const float* g, const float* u, int64_t n, float* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + exp_f32(-g[i])) * u[i];
}

}  // namespace

const char* dec_attn_cpu(const DecAttnArgs& a) {
  if (a.H % a.Hkv != 0 || a.D % 2 != 0) return "dec_attn_cpu: heads must group evenly and head_dim be even";
  if (a.Lq <= 0 || a.M % a.Lq != 0) return "dec_attn_cpu: M must be a whole number of rows of Lq tokens";
  if (a.attend_len <= 0 || a.attend_len > a.max_len) return "dec_attn_cpu: need 0 < attend_len <= max_len";
  for (int64_t l = 0; l < a.Lq; ++l)
    if (a.slots[l] < 0 || a.slots[l] >= a.attend_len) return "dec_attn_cpu: need 0 <= slot < attend_len";
  const int64_t G = a.H / a.Hkv, n = (a.H + 2 * a.Hkv) * a.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.D));
#pragma omp parallel
  {
    // 1: the LoRA term, RoPE on q and k (q rotated in place in y), k and v into the cache. Every token's
    // keys are written before any attends (the loop's barrier): a prefill's tokens attend each other.
#pragma omp for schedule(static)
    for (int64_t m0 = 0; m0 < a.M; m0 += kLoraRows) {
      const int64_t m1 = std::min(a.M, m0 + kLoraRows);
      lora_rows(a.y + m0 * a.ldy, a.ldy, m1 - m0, n, a.lora);
      for (int64_t m = m0; m < m1; ++m) {
        const int64_t b = m / a.Lq, slot = a.slots[m % a.Lq];
        float* y = a.y + m * a.ldy;
        float* rot = tls(static_cast<size_t>(a.D));  // one rotated head
        const float *c = a.cos + m * a.D, *s = a.sin + m * a.D;
        for (int64_t h = 0; h < a.H; ++h) {
          rope_head(y + h * a.D, c, s, a.D, rot);
          for (int64_t i = 0; i < a.D; ++i) y[h * a.D + i] = rot[i];
        }
        for (int64_t g = 0; g < a.Hkv; ++g) {
          const int64_t at = ((b * a.Hkv + g) * a.max_len + slot) * a.D;
          rope_head(y + (a.H + g) * a.D, c, s, a.D, a.k_cache + at);
          const float* v = y + (a.H + a.Hkv + g) * a.D;
          for (int64_t i = 0; i < a.D; ++i) a.v_cache[at + i] = v[i];
        }
      }
    }
    // 2: attention, one (token, key/value head) per task: its G query heads over the attended slots.
    // (a.attend is the same for every thread, so all of them take or skip the loop together.)
    if (a.attend) {
#pragma omp for schedule(static)
      for (int64_t task = 0; task < a.M * a.Hkv; ++task) {
        const int64_t m = task / a.Hkv, g = task % a.Hkv, b = m / a.Lq;
        const float* kc = a.k_cache + (b * a.Hkv + g) * a.max_len * a.D;
        const float* vc = a.v_cache + (b * a.Hkv + g) * a.max_len * a.D;
        const uint8_t* ok = a.mask + b * a.mask_sb + (m % a.Lq) * a.mask_sl;
        float* s = tls(static_cast<size_t>(a.attend_len));
        for (int64_t i = 0; i < G; ++i) {
          const int64_t h = g * G + i;
          const float* q = a.y + m * a.ldy + h * a.D;
          for (int64_t j = 0; j < a.attend_len; ++j) s[j] = ok[j] ? dot(q, kc + j * a.D, a.D) * scale : -INFINITY;
          softmax_v(s, a.attend_len, vc, a.D, a.out + m * a.H * a.D + h * a.D);
        }
      }
    }
  }
  return nullptr;
}

const char* dec_add_norm_cpu(const DecAddNormArgs& a) {
#pragma omp parallel for schedule(static)
  for (int64_t m0 = 0; m0 < a.M; m0 += kLoraRows) {
    const int64_t m1 = std::min(a.M, m0 + kLoraRows);
    if (a.y) lora_rows(a.y + m0 * a.ldy, a.ldy, m1 - m0, a.d, a.lora);
    for (int64_t m = m0; m < m1; ++m) {
      float* x = a.x + m * a.d;
      if (a.y) add_row(x, a.y + m * a.ldy, a.d);
      if (a.norm_w) rms_norm_row(x, a.norm_w, a.d, a.eps, a.out + m * a.d);
    }
  }
  return nullptr;
}

const char* dec_silu_mul_cpu(const DecSiluMulArgs& a) {
#pragma omp parallel for schedule(static)
  for (int64_t m0 = 0; m0 < a.M; m0 += kLoraRows) {
    const int64_t m1 = std::min(a.M, m0 + kLoraRows);
    lora_rows(a.y + m0 * a.ldy, a.ldy, m1 - m0, 2 * a.inter, a.lora);
    for (int64_t m = m0; m < m1; ++m) {
      float* y = a.y + m * a.ldy;
      silu_mul_row(y, y + a.inter, a.inter, a.out + m * a.inter);
    }
  }
  return nullptr;
}

}  // namespace affectrt
