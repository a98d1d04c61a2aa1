// HuBERT's feature-extractor layers (stable-layer-norm variant), channels last:
//
//   ln_gelu:       y[r, :] = GELU(LN(y[r, :]) · gamma + beta)                       in place, rows of C
//   conv0_ln_gelu: out[n, t, :] = GELU(LN(Σ_k w[:, k] · x[n, t·stride + k] + bias) · gamma + beta)
//
// The first layer (one input channel, kernel 10, stride 5) writes the encoder's largest tensor ([N, S/5, C],
// 26 MB for 8 windows of 2 s at C=128, 105 MB at the release's C=512): as conv + LayerNorm + GELU in torch
// that tensor crosses memory five times, here once (each row is made, normalised and activated in L1). The
// later layers are GEMM-class convolutions left to oneDNN; ln_gelu is their one-pass epilogue. CPU only
// (on CUDA the release runs them under fp16 autocast; TensorRT fuses them in the export path).
#pragma once

#include <cstdint>

#include "vec_math.h"

namespace affectrt {

struct LnGeluArgs {
  void* y;                     // [rows, C] of dtype, row stride y_sr, unit channel stride
  const float *gamma, *beta;   // [C] float32
  int64_t rows, C, y_sr;
  float eps;
  int dtype;                   // common.h DType of y: float32, or bfloat16 / float16 (a conv's output under
                               //   autocast), computed in float32 and rounded once
};

struct Conv0Args {
  const float* x;              // [N, S] samples: x[n, s] at n·x_sn + s·x_ss
  const float* w;              // [C, K] (Conv1d weight [C, 1, K], contiguous)
  const float* bias;           // [C] or nullptr
  const float *gamma, *beta;   // [C]
  void* out;                   // [N, T, C] of out_dtype, contiguous, T = (S - K) / stride + 1
  int64_t N, S, T, C, K, stride, x_sn, x_ss;
  float eps;
  int out_dtype;               // float32, or a 16-bit autocast dtype (each row computed in float32, rounded once)
};

const char* ln_gelu_cpu(const LnGeluArgs& a);
const char* conv0_ln_gelu_cpu(const Conv0Args& a);

}  // namespace affectrt
