// CUDA launcher for attn_pool.h: one block per batch row.
//   phase 1: each warp owns rows t = warp, warp + n_warps, ...; lanes stride over D and the partial dot
//            products are reduced with shuffles (the block's reduction split across warps, no block
//            barrier per row); the finished scores live in shared memory.
//   phase 2: each thread owns columns d = tid, tid + blockDim, ... and sums over T from shared scores.
// The second read of z[b] (T·D elements, 12-16 KiB for the released sizes) hits L1/L2.
#include <cuda_runtime.h>

#include "attn_pool.h"

namespace affectrt {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename Ty>
__global__ void __launch_bounds__(kThreads) attn_pool_kernel(AttnPoolArgs a) {
  using S = typename Ty::storage;
  extern __shared__ float scores[];  // [T]
  const int64_t b = blockIdx.x;
  const S* z_b = static_cast<const S*>(a.z) + b * a.z_sb;
  const S* w = static_cast<const S*>(a.w);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const float bias = Ty::load(*static_cast<const S*>(a.bias));

  for (int64_t t = warp; t < a.T; t += kWarps) {
    float acc = attn_pool_score_partial<Ty>(z_b + t * a.z_st, a.z_sd, w, a.w_sd, a.D, lane, 32);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) scores[t] = acc + bias;
  }
  __syncthreads();

  S* out_b = static_cast<S*>(a.out) + b * a.D;
  for (int64_t d = threadIdx.x; d < a.D; d += kThreads)
    out_b[d] = Ty::store(attn_pool_out_at<Ty>(z_b, a.z_st, a.z_sd, scores, a.T, d));
}

template <typename Ty>
const char* launch(const AttnPoolArgs& a, cudaStream_t stream) {
  if (a.B == 0 || a.D == 0) return nullptr;  // empty output: nothing to launch
  if (a.B > 0x7fffffffLL) return "attn_pool_cuda: batch too large for one grid (B > 2^31-1)";
  const size_t smem = static_cast<size_t>(a.T) * sizeof(float);
  if (smem > 48 * 1024) return "attn_pool_cuda: T > 12288 does not fit the scores in shared memory";
  attn_pool_kernel<Ty><<<static_cast<unsigned>(a.B), kThreads, smem, stream>>>(a);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* attn_pool_cuda(const AttnPoolArgs& a, int dtype, uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: return launch<F32>(a, s);
    case kFloat16: return launch<F16>(a, s);
    case kBFloat16: return launch<BF16>(a, s);
    default: return "attn_pool_cuda: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  }
}

}  // namespace affectrt
