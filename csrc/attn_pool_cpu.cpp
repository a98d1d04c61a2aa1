// CPU launcher for attn_pool.h: OpenMP over batch rows, scores kept in a per-row float buffer.
#include <vector>

#include "attn_pool.h"

namespace affectrt {
namespace {

template <typename Ty>
void run(const AttnPoolArgs& a) {
  using S = typename Ty::storage;
  const S* z = static_cast<const S*>(a.z);
  const S* w = static_cast<const S*>(a.w);
  S* out = static_cast<S*>(a.out);
  const float bias = Ty::load(*static_cast<const S*>(a.bias));
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(a.T));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < a.B; ++b) {
      const S* z_b = z + b * a.z_sb;
      for (int64_t t = 0; t < a.T; ++t)
        scores[t] = attn_pool_score_partial<Ty>(z_b + t * a.z_st, a.z_sd, w, a.w_sd, a.D, 0, 1) + bias;
      for (int64_t d = 0; d < a.D; ++d)
        out[b * a.D + d] = Ty::store(attn_pool_out_at<Ty>(z_b, a.z_st, a.z_sd, scores.data(), a.T, d));
    }
  }
}

}  // namespace

const char* attn_pool_cpu(const AttnPoolArgs& a, int dtype) {
  switch (dtype) {
    case kFloat32: run<F32>(a); return nullptr;
    case kFloat16: run<F16>(a); return nullptr;
    case kBFloat16: run<BF16>(a); return nullptr;
    default: return "attn_pool_cpu: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  }
}

}  // namespace affectrt
