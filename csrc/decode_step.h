// A whole Qwen2 decode step over the static cache in one call: for M rows of one new token each, every layer's
// four GEMMs and the glue between them (decode_glue.h), float32, CPU:
//
//   x2 = x ; n1 = RMSNorm(x2)·w_first
//   per layer i:  y = n1 W_qkv + b  -> dec_attn (cache layer i)   -> attn
//                 y = attn W_o      -> dec_add_norm (post norm)   -> x2, n2
//                 y = n2 W_gu       -> dec_silu_mul               -> h
//                 y = h W_down      -> dec_add_norm (next norm)   -> x2, n1
//
// n1 then holds the final-norm hidden states. The same operations, in the same order, as the per-layer Python
// loop of affectrt/models/fused_decode.py (run_layers), which issued ~8 calls a layer from Python: on the
// `small` preset that loop cost about as much as the step's GEMMs. A GEMM runs as the packed stack's own
// call does: `sgemm_` (the BLAS torch's CPU build exports, which torch.mm / addmm call: the bias copied into
// y, then beta = 1, as addmm) for the rows [N, K] or columns [K, N] layout, or rows_linear.h for stacks that
// stream their rows (rows_m range).
#pragma once

#include <cstdint>
#include <vector>

#include "decode_glue.h"

namespace affectrt {

// The Fortran BLAS sgemm (LP64: 32-bit integers), column-major.
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc);

// One packed stack: y [M, N] = x [M, K] W + bias.
struct DecGemm {
  const float* w;     // [N, K] (columns == 0) or [K, N] (columns == 1), contiguous
  const float* bias;  // [N] or nullptr
  int64_t N, K;
  int columns;
  int64_t rows_lo, rows_hi;  // M in [rows_lo, rows_hi]: rows_linear.h (rows layout only); else sgemm
};

struct DecLayer {
  DecGemm gemm[4];  // qkv, o, gate_up, down
  DecLora lora[4];
  const float* post_norm;  // [d] post-attention RMSNorm
  const float* next_norm;  // [d] the next layer's input norm, or the final norm after the last layer
};

struct DecStepPlan {
  std::vector<DecLayer> layers;
  const float* first_norm;  // [d] layer 0's input norm
  SgemmFn sgemm;
  int64_t d, H, Hkv, D, inter;
  float eps;
};

struct DecStepArgs {
  const float* x;  // [M, d] the new tokens' embeddings
  // scratch, each [M, ·] contiguous: x2 [d] the residual stream, n1 [d] (the result), attn [H·D], n2 [d],
  // h [inter], y [the widest stack's N]
  float *x2, *n1, *attn, *n2, *h, *y;
  const float *cos, *sin;  // [M, D]
  float *k_cache, *v_cache;  // layer 0's [M, Hkv, max_len, D]; layer i at + i·layer_stride floats
  int64_t layer_stride;
  const int64_t* slot;  // [1]: the cache slot this token is written to
  int64_t attend_len, max_len;
  const uint8_t* mask;  // bools, mask[m·mask_sb + j]: row m attends slot j
  int64_t mask_sb;
  int64_t M;
};

const char* dec_step_cpu(const DecStepPlan& p, const DecStepArgs& a);

}  // namespace affectrt
