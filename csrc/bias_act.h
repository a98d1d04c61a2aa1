// y = act(y + bias), in place, over the rows of a matrix: the epilogue of a bias-free GEMM.
//
// An encoder MLP's first linear writes its largest activation ([N·T, 4d]); as addmm + activation that is
// a bias broadcast, the GEMM and two or three elementwise passes over memory (quick GELU: 1.702x, σ, ·x),
// here the GEMM and one read-modify-write pass. CPU only: on CUDA the release runs these layers under fp16
// autocast and TensorRT fuses the epilogue into the GEMM (affectrt export).
#pragma once

#include <cstdint>

#include "vec_math.h"

namespace affectrt {

struct BiasActArgs {
  void* y;             // [rows, cols] of dtype (float32, or bfloat16 / float16: a GEMM's output under
                       //   autocast), row stride y_sr, unit column stride
  const float* bias;   // [cols] float32, or nullptr
  int64_t rows, cols, y_sr;
  int act;             // Activation code (vec_math.h)
  int dtype;           // common.h DType of y; 16-bit rows are computed in float32 and rounded once
};

const char* bias_act_cpu(const BiasActArgs& a);

}  // namespace affectrt
