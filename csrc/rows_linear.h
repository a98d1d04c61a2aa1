// y[m, n] = Σ_k x[m, k] · W[n, k] + bias[n] for a few rows m: the LLM's projections in a decode step.
//
// A decode step multiplies one row per sequence by every weight: for a batch of 16 on the `medium` preset
// that is 1.4 GB of float32 weights read once per step. MKL's sgemm runs that shape far below the rate the
// weights can be read (10 against 26 GB/s on a 2-core Xeon); these kernels stream each weight row once:
// below kRowsGemmMinM rows as dot products (cpu_gemm.h gemv), from it on through the outer-product micro-kernel
// over x transposed (cpu_gemm.h gemm). W in nn.Linear's [out, in] layout. CPU only: on CUDA the release's
// fp16 GEMMs are cuBLAS's, at HBM bandwidth.
//
// dtype (common.h DType): x, W, bias and y all float32, all bfloat16 or all float16. 16-bit weights are
// widened to float32 a few rows at a time into a per-thread buffer that the caches hold, products are summed
// in float32 and y is rounded once to the dtype (to nearest even): torch's CPU bf16/fp16 linear computes the
// same, in another order of the sums. That reads half the bytes of float32 at the same FMA work.
#pragma once

#include <cstdint>

namespace affectrt {

struct RowsLinearArgs {
  const void* x;     // [M, K], row stride ldx, unit k stride
  const void* w;     // [N, K], row stride ldw, unit k stride
  const void* bias;  // [N] or nullptr
  void* y;           // [M, N], row stride ldy, unit n stride
  int64_t M, N, K, ldx, ldw, ldy;
  int dtype;  // kFloat32, kFloat16 or kBFloat16, for all four
};

const char* rows_linear_cpu(const RowsLinearArgs& a);

}  // namespace affectrt
