// CUDA launcher for fusion_head.h: three launches on one stream, one per dependency.
//   1 pool_kernel   one block per batch row: warps compute the T scores of each modality (lane-strided dot
//                   products, shuffle reduction), then threads own columns of pooled and mean vectors.
//   2 gemv_kernel   one warp per weight row of H_v, H_a, u_v, u_a: the row is read from HBM once and applied
//                   to every batch row (later batch rows hit L1/L2).
//   3 gate_kernel   each block first computes g [B, 2] into shared memory (warps over batch rows), then one
//                   warp per row of W_mp applies it to z_f = g0 u_v + g1 u_a formed on the fly.
#include <cuda_runtime.h>

#include "fusion_head.h"

namespace affectrt {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxT = 6144;   // both modalities' scores in 48 KiB of shared memory
constexpr int64_t kMaxB = 6144;   // g [B, 2] in 48 KiB of shared memory

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <typename Ty>
__device__ void pool_block(const FusionHeadArgs& a, const void* z, int64_t sb, int64_t st, int64_t sd, int64_t T,
                           int64_t K, const void* watt, int64_t watt_sd, const void* batt, int64_t pooled_off,
                           int64_t mean_off, float* scores) {
  using S = typename Ty::storage;
  const int64_t b = blockIdx.x;
  const S* z_b = static_cast<const S*>(z) + b * sb;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float bias = Ty::load(*static_cast<const S*>(batt));
  for (int64_t t = warp; t < T; t += kWarps) {
    const float s = warp_sum(attn_pool_score_partial<Ty>(z_b + t * st, sd, static_cast<const S*>(watt), watt_sd, K,
                                                         lane, 32));
    if (lane == 0) scores[t] = s + bias;
  }
  __syncthreads();
  float* x = fh_x(a) + b * fh_x_width(a);
  for (int64_t d = threadIdx.x; d < K; d += kThreads) {
    x[pooled_off + d] = attn_pool_out_at<Ty>(z_b, st, sd, scores, T, d);
    x[mean_off + d] = fh_mean_at<Ty>(z_b, st, sd, T, d);
  }
}

template <typename Ty>
__global__ void __launch_bounds__(kThreads) fusion_head_pool_kernel(FusionHeadArgs a) {
  extern __shared__ float scores[];  // [Tv + Ta]
  pool_block<Ty>(a, a.zv, a.zv_sb, a.zv_st, a.zv_sd, a.Tv, a.dv, a.wva, a.wva_sd, a.bva, 0, a.dv + a.da, scores);
  pool_block<Ty>(a, a.za, a.za_sb, a.za_st, a.za_sd, a.Ta, a.da, a.waa, a.waa_sd, a.baa, a.dv, 2 * a.dv + a.da,
                 scores + a.Tv);
}

template <typename Ty>
__global__ void __launch_bounds__(kThreads) fusion_head_gemv_kernel(FusionHeadArgs a) {
  using S = typename Ty::storage;
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (r >= 2 * a.D + 2 * a.dm) return;
  const FhSegment s = fh_segment(a, r);
  const S* w_row = static_cast<const S*>(s.W) + s.n * s.sn;
  const int64_t X = fh_x_width(a);
  for (int64_t b = 0; b < a.B; ++b) {
    const float acc = warp_sum(fh_dot_partial<Ty>(w_row, s.sk, fh_x(a) + b * X + s.x_off, s.K, lane, 32));
    if (lane == 0) fh_store_segment<Ty>(a, s, b, acc);
  }
}

template <typename Ty>
__global__ void __launch_bounds__(kThreads) fusion_head_gate_kernel(FusionHeadArgs a) {
  using S = typename Ty::storage;
  extern __shared__ float g[];  // [B, 2]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const S* bg = static_cast<const S*>(a.bg);
  for (int64_t b = warp; b < a.B; b += kWarps) {
    const float* u_b = fh_u(a) + b * 2 * a.dm;
    const float g0 = warp_sum(fh_gate_partial<Ty>(a, 0, u_b, lane, 32));
    const float g1 = warp_sum(fh_gate_partial<Ty>(a, 1, u_b, lane, 32));
    if (lane == 0) g[2 * b] = g0 + Ty::load(bg[0]), g[2 * b + 1] = g1 + Ty::load(bg[1]);
  }
  __syncthreads();
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (n >= a.D) return;
  const S* w_row = static_cast<const S*>(a.Wmp) + n * a.Wmp_sn;
  const float bias = Ty::load(static_cast<const S*>(a.bmp)[n]);
  for (int64_t b = 0; b < a.B; ++b) {
    const float* u_b = fh_u(a) + b * 2 * a.dm;
    float acc = 0.f;
    for (int64_t k = lane; k < a.dm; k += 32)
      acc += Ty::load(w_row[k * a.Wmp_sk]) * (g[2 * b] * u_b[k] + g[2 * b + 1] * u_b[a.dm + k]);
    acc = warp_sum(acc);
    if (lane == 0) fh_store_out<Ty>(a, b, 0, n, acc + bias);
  }
}

template <typename Ty>
const char* launch(const FusionHeadArgs& a, cudaStream_t stream) {
  if (a.B == 0) return nullptr;
  if (a.Tv <= 0 || a.Ta <= 0) return "fusion_head_cuda: z_video and z_audio need at least one time step";
  if (a.Tv + a.Ta > kMaxT) return "fusion_head_cuda: Tv + Ta > 6144 scores do not fit in shared memory";
  if (a.B > kMaxB) return "fusion_head_cuda: B > 6144 gates do not fit in shared memory; split the batch";
  const unsigned gemv_blocks = static_cast<unsigned>((2 * a.D + 2 * a.dm + kWarps - 1) / kWarps);
  const unsigned out_blocks = static_cast<unsigned>((a.D + kWarps - 1) / kWarps);
  fusion_head_pool_kernel<Ty><<<static_cast<unsigned>(a.B), kThreads, (a.Tv + a.Ta) * sizeof(float), stream>>>(a);
  fusion_head_gemv_kernel<Ty><<<gemv_blocks, kThreads, 0, stream>>>(a);
  fusion_head_gate_kernel<Ty><<<out_blocks, kThreads, 2 * a.B * sizeof(float), stream>>>(a);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* fusion_head_cuda(const FusionHeadArgs& a, int dtype, uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: return launch<F32>(a, s);
    case kFloat16: return launch<F16>(a, s);
    case kBFloat16: return launch<BF16>(a, s);
    default: return "fusion_head_cuda: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  }
}

}  // namespace affectrt
