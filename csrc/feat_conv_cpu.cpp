// CPU launchers for feat_conv.h: OpenMP over rows; a row's LayerNorm statistics and its GELU run on the
// row while it is in L1 (two passes over C floats, not over the tensor).
#include <omp.h>

#include <vector>

#include "common.h"
#include "cpu_convert.h"
#include "feat_conv.h"

namespace affectrt {
namespace {

// LayerNorm (biased variance, two passes as the definition reads) then GELU, in place on one row.
AFFECTRT_CLONES void ln_gelu_row(float* __restrict y, const float* __restrict g, const float* __restrict b,
                                 int64_t C, float eps) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < C; ++c) sum += y[c];
  const float mean = sum / static_cast<float>(C);
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < C; ++c) sq += (y[c] - mean) * (y[c] - mean);
  const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(C) + eps);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) y[c] = gelu_f32((y[c] - mean) * rstd * g[c] + b[c]);
}

// One output row of the first conv: acc[c] = bias[c] + Σ_k wt[k, c] · x[k], vectorised over channels.
AFFECTRT_CLONES void conv0_row(float* __restrict out, const float* __restrict wt, const float* __restrict bias,
                               const float* x, int64_t x_ss, int64_t C, int64_t K) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] = bias ? bias[c] : 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    const float xk = x[k * x_ss];
    const float* w = wt + k * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] += w[c] * xk;
  }
}

}  // namespace

const char* ln_gelu_cpu(const LnGeluArgs& a) {
  if (a.C <= 0) return "ln_gelu_cpu: C must be positive";
  if (!known_dtype(a.dtype))
    return "ln_gelu_cpu: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  const int64_t bytes = dtype_bytes(a.dtype);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < a.rows; ++r) {
    void* row = static_cast<char*>(a.y) + r * a.y_sr * bytes;
    float* y = a.dtype == kFloat32 ? static_cast<float*>(row) : row_buffer(a.C);
    if (a.dtype != kFloat32) row_to_f32(row, a.dtype, y, a.C);
    ln_gelu_row(y, a.gamma, a.beta, a.C, a.eps);
    if (a.dtype != kFloat32) row_from_f32(y, a.dtype, row, a.C);
  }
  return nullptr;
}

const char* conv0_ln_gelu_cpu(const Conv0Args& a) {
  if (a.C <= 0 || a.K <= 0 || a.stride <= 0) return "conv0_ln_gelu_cpu: C, K and stride must be positive";
  if (a.T != (a.S - a.K) / a.stride + 1) return "conv0_ln_gelu_cpu: T does not match (S - K) / stride + 1";
  if (!known_dtype(a.out_dtype))
    return "conv0_ln_gelu_cpu: unsupported out dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  // The weight as [K, C] so that the inner loop runs over contiguous channels.
  std::vector<float> wt(static_cast<size_t>(a.K * a.C));
  for (int64_t c = 0; c < a.C; ++c)
    for (int64_t k = 0; k < a.K; ++k) wt[k * a.C + c] = a.w[c * a.K + k];
  const int64_t rows = a.N * a.T, bytes = dtype_bytes(a.out_dtype);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = r / a.T, t = r % a.T;
    void* dst = static_cast<char*>(a.out) + r * a.C * bytes;
    float* out = a.out_dtype == kFloat32 ? static_cast<float*>(dst) : row_buffer(a.C);
    conv0_row(out, wt.data(), a.bias, a.x + n * a.x_sn + t * a.stride * a.x_ss, a.x_ss, a.C, a.K);
    ln_gelu_row(out, a.gamma, a.beta, a.C, a.eps);
    if (a.out_dtype != kFloat32) row_from_f32(out, a.out_dtype, dst, a.C);
  }
  return nullptr;
}

}  // namespace affectrt
