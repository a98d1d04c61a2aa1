// CUDA launcher for cross_attn.h: grid (B, splits, ceil(R / kRows)), 256 threads, then a combine kernel.
//   per tile of kBlockN keys:
//   phase 1: the 8 warps share the kRows x kBlockN dot products q̃_r · x_j (lanes stride over E, shuffle
//            reduction); masked scores go to shared memory.
//   phase 2: one thread per row folds the tile into its online softmax (m, l) and turns scores into p.
//   phase 3: each thread owns columns e = tid, tid + 256, ... of the kRows accumulators (shared memory)
//            and adds Σ_j p_rj x_j[e]; the tile's second read hits L1.
// The combine kernel merges the splits of one (b, r) row with a log-sum-exp reduction.
#include <cuda_runtime.h>

#include "cross_attn.h"

namespace affectrt {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 4;
constexpr int kBlockN = 32;

// (kThreads, 2): with the thread count alone, ptxas 13 targets 64 registers on sm_90 and spills 16 bytes
// (the xv tile); two resident blocks per SM give it 128, and it uses 86 with no spills (sm_80 and sm_90).
template <typename Ty>
__global__ void __launch_bounds__(kThreads, 2) cross_attn_split_kernel(CrossAttnArgs a) {
  using S = typename Ty::storage;
  extern __shared__ float smem[];
  float* acc = smem;                      // [kRows, E]
  float* sco = acc + kRows * a.E;         // [kRows, kBlockN]
  float* alpha = sco + kRows * kBlockN;   // [kRows]
  float* m = alpha + kRows;               // [kRows]
  float* l = m + kRows;                   // [kRows]
  const int64_t b = blockIdx.x, s = blockIdx.y, r0 = static_cast<int64_t>(blockIdx.z) * kRows;
  const int nr = a.R - r0 < kRows ? static_cast<int>(a.R - r0) : kRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int64_t lo, hi;
  cross_attn_split_range(a.Nk, a.splits, kBlockN, s, &lo, &hi);
  const S* x_b = static_cast<const S*>(a.x) + b * a.x_sb;
  const uint8_t* keep_b = a.keep ? a.keep + b * a.keep_sb : nullptr;
  const float* qt = a.qt + (b * a.R + r0) * a.E;
  for (int64_t i = threadIdx.x; i < kRows * a.E; i += kThreads) acc[i] = 0.f;
  if (threadIdx.x < kRows) m[threadIdx.x] = -INFINITY, l[threadIdx.x] = 0.f;
  __syncthreads();
  for (int64_t j0 = lo; j0 < hi; j0 += kBlockN) {
    const int nb = hi - j0 < kBlockN ? static_cast<int>(hi - j0) : kBlockN;
    for (int idx = warp; idx < nr * nb; idx += kWarps) {
      const int k = idx / nb, j = idx % nb;
      const S* xj = x_b + (j0 + j) * a.x_sn;
      const float* q = qt + k * a.E;
      float d = 0.f;
      for (int64_t e = lane; e < a.E; e += 32) d += q[e] * Ty::load(xj[e * a.x_se]);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
      if (lane == 0) sco[k * kBlockN + j] = cross_attn_mask(d, keep_b, a.keep_sn, j0 + j);
    }
    __syncthreads();
    if (threadIdx.x < nr) {
      const int k = threadIdx.x;
      float* p = sco + k * kBlockN;
      float tile_max = -INFINITY;
      for (int j = 0; j < nb; ++j) tile_max = fmaxf(tile_max, p[j]);
      alpha[k] = cross_attn_rescale(&m[k], &l[k], tile_max);
      float sum = 0.f;
      for (int j = 0; j < nb; ++j) sum += (p[j] = expf(p[j] - m[k]));
      l[k] += sum;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < a.E; e += kThreads) {
      float xv[kBlockN];
#pragma unroll
      for (int j = 0; j < kBlockN; ++j) xv[j] = j < nb ? Ty::load(x_b[(j0 + j) * a.x_sn + e * a.x_se]) : 0.f;
      for (int k = 0; k < nr; ++k) {
        float v = acc[k * a.E + e] * alpha[k];
#pragma unroll
        for (int j = 0; j < kBlockN; ++j) v += (j < nb ? sco[k * kBlockN + j] : 0.f) * xv[j];
        acc[k * a.E + e] = v;
      }
    }
    __syncthreads();
  }
  const int64_t item = (b * a.splits + s) * a.R + r0;  // row (b, s, r0) of the work layout
  float* w_acc = a.work + item * a.E;
  for (int64_t i = threadIdx.x; i < nr * a.E; i += kThreads) w_acc[i] = acc[i];
  float* w_m = a.work + a.B * a.splits * a.R * a.E + item;
  float* w_l = w_m + a.B * a.splits * a.R;
  if (threadIdx.x < nr) w_m[threadIdx.x] = m[threadIdx.x], w_l[threadIdx.x] = l[threadIdx.x];
}

__global__ void __launch_bounds__(kThreads) cross_attn_combine_kernel(CrossAttnArgs a) {
  extern __shared__ float w[];  // [splits + 2]
  const int64_t br = blockIdx.x, b = br / a.R, r = br % a.R;
  const int64_t first = b * a.splits * a.R + r;
  const float* m_all = a.work + a.B * a.splits * a.R * a.E;
  const float* l_all = m_all + a.B * a.splits * a.R;
  if (threadIdx.x == 0) {
    float M;
    const float L = cross_attn_combine_weights(m_all + first, l_all + first, a.R, a.splits, w, &M);
    w[a.splits] = 1.f / L;
    a.m[br] = M;
    a.logl[br] = logf(L);
  }
  __syncthreads();
  const float inv_l = w[a.splits];
  for (int64_t e = threadIdx.x; e < a.E; e += kThreads) {
    float v = 0.f;
    for (int64_t s = 0; s < a.splits; ++s) v += w[s] * a.work[(first + s * a.R) * a.E + e];
    a.a[br * a.E + e] = v * inv_l;
  }
}

template <typename Ty>
const char* launch(const CrossAttnArgs& a, cudaStream_t stream) {
  if (a.B == 0 || a.R == 0 || a.E == 0) return nullptr;
  if (a.Nk < 1) return "cross_attn_cuda: x must have at least one key (Nk >= 1)";
  if (a.splits < 1 || a.splits > 65535) return "cross_attn_cuda: splits must be in [1, 65535]";
  const int64_t row_blocks = (a.R + kRows - 1) / kRows;
  if (a.B > 0x7fffffffLL || row_blocks > 65535 || a.B * a.R > 0x7fffffffLL)
    return "cross_attn_cuda: grid too large (B > 2^31-1 or heads*Nq > 262140)";
  const size_t smem = static_cast<size_t>(kRows * a.E + kRows * kBlockN + 3 * kRows) * sizeof(float);
  if (smem > 48 * 1024) return "cross_attn_cuda: E > 3040 does not fit the accumulators in shared memory";
  const size_t smem_combine = static_cast<size_t>(a.splits + 1) * sizeof(float);
  if (smem_combine > 48 * 1024) return "cross_attn_cuda: too many splits for the combine kernel";
  const dim3 grid(static_cast<unsigned>(a.B), static_cast<unsigned>(a.splits), static_cast<unsigned>(row_blocks));
  cross_attn_split_kernel<Ty><<<grid, kThreads, smem, stream>>>(a);
  cross_attn_combine_kernel<<<static_cast<unsigned>(a.B * a.R), kThreads, smem_combine, stream>>>(a);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* cross_attn_cuda(const CrossAttnArgs& a, int dtype, uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: return launch<F32>(a, s);
    case kFloat16: return launch<F16>(a, s);
    case kBFloat16: return launch<BF16>(a, s);
    default: return "cross_attn_cuda: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  }
}

}  // namespace affectrt
