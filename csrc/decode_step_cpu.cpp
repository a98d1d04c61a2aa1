// CPU launcher for decode_step.h: the layers in order, each GEMM through sgemm_ or rows_linear_cpu, the glue
// through decode_glue_cpu.cpp's launchers (each its own OpenMP region, as from Python).
#include "decode_step.h"

#include <climits>
#include <cstring>

#include "common.h"
#include "rows_linear.h"

namespace affectrt {
namespace {

// y [M, N] = x [M, K] W + bias, as the packed stack's __call__ computes it (affectrt/models/packed.py).
const char* gemm(const DecStepPlan& p, const DecGemm& g, const float* x, int64_t M, float* y) {
  if (!g.columns && g.rows_lo <= M && M <= g.rows_hi) {
    const RowsLinearArgs r{x, g.w, g.bias, y, M, g.N, g.K, g.K, g.K, g.N, kFloat32};
    return rows_linear_cpu(r);
  }
  if (g.N > INT_MAX || g.K > INT_MAX || M > INT_MAX) return "dec_step_cpu: a GEMM dimension exceeds the BLAS's int";
  // Row-major y = x W is column-major yᵀ = Wᵀ xᵀ: W's layout decides whether the BLAS transposes it.
  const int n = static_cast<int>(g.N), m = static_cast<int>(M), k = static_cast<int>(g.K);
  const int ldw = g.columns ? n : k;
  const char ta = g.columns ? 'N' : 'T', tb = 'N';
  const float alpha = 1.0f;
  float beta = 0.0f;
  if (g.bias) {  // as addmm: the bias broadcast into y, then y = x W + 1·y
    for (int64_t r = 0; r < M; ++r) std::memcpy(y + r * g.N, g.bias, static_cast<size_t>(g.N) * sizeof(float));
    beta = 1.0f;
  }
  p.sgemm(&ta, &tb, &n, &m, &k, &alpha, g.w, &ldw, x, &k, &beta, y, &n);
  return nullptr;
}

}  // namespace

const char* dec_step_cpu(const DecStepPlan& p, const DecStepArgs& a) {
  if (p.sgemm == nullptr) return "dec_step_cpu: no sgemm (the plan was built without a BLAS)";
  if (a.M <= 0) return "dec_step_cpu: M must be positive";
  const int64_t M = a.M, d = p.d;
  std::memcpy(a.x2, a.x, static_cast<size_t>(M * d) * sizeof(float));
  const DecLora none{nullptr, 0, 0, 0, 0.0f, nullptr, 0};
  const char* err = dec_add_norm_cpu({nullptr, 0, none, a.x2, p.first_norm, a.n1, M, d, p.eps});
  for (size_t i = 0; i < p.layers.size() && !err; ++i) {
    const DecLayer& L = p.layers[i];
    const int64_t off = static_cast<int64_t>(i) * a.layer_stride;
    if ((err = gemm(p, L.gemm[0], a.n1, M, a.y))) break;
    err = dec_attn_cpu({a.y, L.gemm[0].N, L.lora[0], a.cos, a.sin, a.k_cache + off, a.v_cache + off, a.slot, 1,
                        a.attend_len, a.max_len, a.mask, a.mask_sb, 0, a.attn, M, p.H, p.Hkv, p.D, 1});
    if (err || (err = gemm(p, L.gemm[1], a.attn, M, a.y))) break;
    if ((err = dec_add_norm_cpu({a.y, L.gemm[1].N, L.lora[1], a.x2, L.post_norm, a.n2, M, d, p.eps}))) break;
    if ((err = gemm(p, L.gemm[2], a.n2, M, a.y))) break;
    if ((err = dec_silu_mul_cpu({a.y, L.gemm[2].N, L.lora[2], a.h, M, p.inter}))) break;
    if ((err = gemm(p, L.gemm[3], a.h, M, a.y))) break;
    err = dec_add_norm_cpu({a.y, L.gemm[3].N, L.lora[3], a.x2, L.next_norm, a.n1, M, d, p.eps});
  }
  return err;
}

}  // namespace affectrt
