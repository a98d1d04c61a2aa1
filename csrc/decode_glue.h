// What a Qwen2 step over a static cache does between its GEMMs, for M = B·Lq tokens (Lq new tokens in each of
// B rows: Lq = 1 decodes, Lq > 1 is a prefill), float32, CPU:
//
//   n1 = RMSNorm(x)·w1 ; y = n1 W_qkv + b                                   (GEMM: torch, packed stacks)
//   dec_attn:      y += s·(a B), RoPE(q, k), k/v into the cache at `slot`, attention over the cache -> o
//                  (a prefill stops after the cache write and its attention is SDPA's, in Python)
//   y = o W_o                                                               (GEMM)
//   dec_add_norm:  y += s·(a B), x += y, n2 = RMSNorm(x)·w2
//   y = n2 W_gu                                                             (GEMM)
//   dec_silu_mul:  y += s·(a B), h = silu(gate)·up
//   y = h W_down                                                            (GEMM)
//   dec_add_norm:  y += s·(a B), x += y, n1 = RMSNorm(x)·w (the next layer's, or the final norm's)
//
// where y = [z | a] is a stacked GEMM's output (affectrt/models/packed.py): the projections' outputs z side by
// side, then the unmerged LoRA's A-outputs a [rank]; B is the block-diagonal stack of the adapters' B
// ([rank, n] "columns" or [n, rank] "rows" layout) and s their common scale. Each term is computed as the
// modules compute it (t = a B summed in float32, then z + t·s; RoPE as x·cos + rotate_half(x)·sin; SDPA's
// scores (q·k)·D^-½, softmax, p·v; silu(g) = g / (1 + e^-g)), so the step equals the modules' to float32
// rounding. A small LLM's step is a few hundred such operators whose dispatch costs more than their work.
#pragma once

#include <cstdint>

namespace affectrt {

// The LoRA term added to y[:, :n] from y's own columns a = y[:, a_col : a_col + rank] (b == nullptr: none).
// B is block-diagonal, one block per adapter: blocks[4i .. 4i+3] = (r0, r, col, cols), adapter i's rank rows
// r0 .. r0+r feed only its output columns col .. col+cols. The zeros outside the blocks add exact zeros to the
// sums (and y + 0·s = y), so they are skipped.
struct DecLora {
  const float* b;  // [rank, n] (b_rows == 0) or [n, rank] (b_rows == 1)
  int64_t rank, a_col;
  int b_rows;
  float scale;
  const int64_t* blocks;
  int64_t n_blocks;
};

struct DecAttnArgs {
  float* y;  // [M, ldy], token m = b·Lq + l: q [H·D] | k [Hkv·D] | v [Hkv·D] | a; LoRA term added in place
  int64_t ldy;
  DecLora lora;
  const float* cos;  // [M, D] at each token's position
  const float* sin;
  float* k_cache;  // [B, Hkv, max_len, D] (one layer), contiguous
  float* v_cache;
  const int64_t* slots;  // [Lq]: the cache slot token l of every row is written to
  int64_t Lq, attend_len, max_len;
  const uint8_t* mask;  // bools, mask[b·mask_sb + l·mask_sl + j]: token (b, l) may attend slot j
  int64_t mask_sb, mask_sl;
  float* out;  // [M, H·D]
  int64_t M, H, Hkv, D;
  int attend;  // 0: stop after the cache write (the caller runs the attention: a prefill's, with SDPA)
};

struct DecAddNormArgs {
  float* y;  // [M, ldy]: z [d] | a; the LoRA term is added in place (nullptr: no add, only the norm of x)
  int64_t ldy;
  DecLora lora;
  float* x;              // [M, d] residual stream, x += z
  const float* norm_w;   // [d], or nullptr: no norm
  float* out;            // [M, d] RMSNorm(x)·norm_w
  int64_t M, d;
  float eps;
};

struct DecSiluMulArgs {
  float* y;  // [M, ldy]: gate [inter] | up [inter] | a; the LoRA term is added in place
  int64_t ldy;
  DecLora lora;
  float* out;  // [M, inter] silu(gate)·up
  int64_t M, inter;
};

const char* dec_attn_cpu(const DecAttnArgs& a);
const char* dec_add_norm_cpu(const DecAddNormArgs& a);
const char* dec_silu_mul_cpu(const DecSiluMulArgs& a);

}  // namespace affectrt
