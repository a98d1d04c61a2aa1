// CPU launcher for bias_act.h: OpenMP over rows, each row one vectorised pass (SIMD clone picked at load).
#include "bias_act.h"

#include "common.h"
#include "cpu_convert.h"

namespace affectrt {
namespace {

template <int Act>
inline float activate(float x) {
  if constexpr (Act == kGelu) return gelu_f32(x);
  else if constexpr (Act == kQuickGelu) return quick_gelu_f32(x);
  else return x;
}

template <int Act>
AFFECTRT_CLONES void row_with_bias(float* __restrict y, const float* __restrict b, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = activate<Act>(y[i] + b[i]);
}

template <int Act>
AFFECTRT_CLONES void row(float* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = activate<Act>(y[i]);
}

template <int Act>
void run(const BiasActArgs& a) {
  const int64_t bytes = dtype_bytes(a.dtype);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < a.rows; ++r) {
    void* row_r = static_cast<char*>(a.y) + r * a.y_sr * bytes;
    // 16-bit rows: widened into a per-thread float row, computed, rounded back once
    float* y = a.dtype == kFloat32 ? static_cast<float*>(row_r) : row_buffer(a.cols);
    if (a.dtype != kFloat32) row_to_f32(row_r, a.dtype, y, a.cols);
    if (a.bias) row_with_bias<Act>(y, a.bias, a.cols);
    else row<Act>(y, a.cols);
    if (a.dtype != kFloat32) row_from_f32(y, a.dtype, row_r, a.cols);
  }
}

}  // namespace

const char* bias_act_cpu(const BiasActArgs& a) {
  if (!known_dtype(a.dtype))
    return "bias_act_cpu: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  switch (a.act) {
    case kIdentity: run<kIdentity>(a); return nullptr;
    case kGelu: run<kGelu>(a); return nullptr;
    case kQuickGelu: run<kQuickGelu>(a); return nullptr;
    default: return "bias_act_cpu: unknown activation code (expected 0=identity, 1=gelu, 2=quick_gelu)";
  }
}

}  // namespace affectrt
