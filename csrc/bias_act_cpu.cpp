// CPU launcher for bias_act.h: OpenMP over rows, each row one vectorised pass (SIMD clone picked at load).
#include "bias_act.h"

#include "common.h"

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
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < a.rows; ++r) {
    if (a.bias) row_with_bias<Act>(a.y + r * a.y_sr, a.bias, a.cols);
    else row<Act>(a.y + r * a.y_sr, a.cols);
  }
}

}  // namespace

const char* bias_act_cpu(const BiasActArgs& a) {
  switch (a.act) {
    case kIdentity: run<kIdentity>(a); return nullptr;
    case kGelu: run<kGelu>(a); return nullptr;
    case kQuickGelu: run<kQuickGelu>(a); return nullptr;
    default: return "bias_act_cpu: unknown activation code (expected 0=identity, 1=gelu, 2=quick_gelu)";
  }
}

}  // namespace affectrt
