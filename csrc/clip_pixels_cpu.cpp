// CPU launcher for clip_pixels.h: OpenMP over (frame, run of pixels); each task reads its pixels once and
// writes its three channel rows.
#include "clip_pixels.h"

#include "common.h"

namespace affectrt {
namespace {

constexpr int64_t kPixelsPerTask = 4096;  // 16 KB of each channel row written per task

AFFECTRT_CLONES void lookup_run(const uint8_t* __restrict x, const float* __restrict lut, float* __restrict r,
                                float* __restrict g, float* __restrict b, int64_t n) {
  for (int64_t p = 0; p < n; ++p) {
    r[p] = lut[x[3 * p]];
    g[p] = lut[256 + x[3 * p + 1]];
    b[p] = lut[512 + x[3 * p + 2]];
  }
}

}  // namespace

const char* clip_pixels_cpu(const ClipPixelsArgs& a) {
  if (a.N < 0 || a.P < 0) return "clip_pixels_cpu: N and P must be non-negative";
  const int64_t runs = (a.P + kPixelsPerTask - 1) / kPixelsPerTask;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < a.N * runs; ++task) {
    const int64_t n = task / runs, p0 = (task % runs) * kPixelsPerTask;
    const int64_t len = p0 + kPixelsPerTask < a.P ? kPixelsPerTask : a.P - p0;
    float* o = a.out + n * 3 * a.P + p0;
    lookup_run(a.x + (n * a.P + p0) * 3, a.lut, o, o + a.P, o + 2 * a.P, len);
  }
  return nullptr;
}

}  // namespace affectrt
