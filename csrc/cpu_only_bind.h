// pybind11 bindings of the CPU-only kernels (bias_act.h, clip_pixels.h, feat_conv.h and decode_glue.h: float32;
// rows_linear.h: float32, float16, bfloat16), included by bindings_cpu.cpp. Each takes raw pointers, sizes
// and strides from its affectrt.ops (or affectrt.models.fused_decode) module.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <tuple>

#include "bias_act.h"
#include "clip_pixels.h"
#include "decode_glue.h"
#include "feat_conv.h"
#include "rows_linear.h"

namespace affectrt {

inline void check(const char* err) {
  if (err) throw std::invalid_argument(err);
}

// Run a launcher without the GIL (it only touches raw memory), then raise its error message, if any.
template <typename Args>
void run_nogil(const char* (*launch)(const Args&), const Args& a) {
  const char* err;
  {
    pybind11::gil_scoped_release nogil;
    err = launch(a);
  }
  check(err);
}

// decode_glue.h's LoRA term from Python: (b, rank, a_col, b_rows, scale, blocks, n_blocks); b 0 = none.
using LoraTuple = std::tuple<uintptr_t, int64_t, int64_t, int, float, uintptr_t, int64_t>;

inline DecLora dec_lora(const LoraTuple& l) {
  return DecLora{reinterpret_cast<const float*>(std::get<0>(l)), std::get<1>(l), std::get<2>(l), std::get<3>(l),
                 std::get<4>(l), reinterpret_cast<const int64_t*>(std::get<5>(l)), std::get<6>(l)};
}

inline void bind_cpu_only(pybind11::module_& m) {
  namespace py = pybind11;
  auto f32 = [](uintptr_t p) { return reinterpret_cast<float*>(p); };
  m.def(
      "clip_pixels",
      [f32](uintptr_t x, uintptr_t lut, uintptr_t out, int64_t n, int64_t p) {
        const ClipPixelsArgs a{reinterpret_cast<const uint8_t*>(x), f32(lut), f32(out), n, p};
        run_nogil(clip_pixels_cpu, a);
      },
      "out[n, c, p] = lut[c][x[n, p, c]]: uint8 channels-last frames through a [3, 256] table (clip_pixels.h)");
  m.def(
      "bias_act",
      [f32](uintptr_t y, uintptr_t bias, int64_t rows, int64_t cols, int64_t y_sr, int act, int dtype) {
        const BiasActArgs a{reinterpret_cast<void*>(y), f32(bias), rows, cols, y_sr, act, dtype};
        run_nogil(bias_act_cpu, a);
      },
      "y[r, :] = act(y[r, :] + bias) in place (y float32, bfloat16 or float16, computed in float32; bias "
      "float32, 0 = none)",
      py::arg("y"), py::arg("bias"), py::arg("rows"), py::arg("cols"), py::arg("y_sr"), py::arg("act"),
      py::arg("dtype") = 0);
  m.def(
      "rows_linear",
      [](uintptr_t x, uintptr_t w, uintptr_t bias, uintptr_t y, int64_t M, int64_t N, int64_t K, int64_t ldx,
         int64_t ldw, int64_t ldy, int dtype) {
        auto p = [](uintptr_t v) { return reinterpret_cast<void*>(v); };
        const RowsLinearArgs a{p(x), p(w), p(bias), p(y), M, N, K, ldx, ldw, ldy, dtype};
        run_nogil(rows_linear_cpu, a);
      },
      "y[m, n] = x[m, :] · w[n, :] + bias[n] for a few rows (float32, float16 or bfloat16, summed in float32; "
      "bias 0 = none)",
      py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("M"), py::arg("N"), py::arg("K"),
      py::arg("ldx"), py::arg("ldw"), py::arg("ldy"), py::arg("dtype"));
  m.def(
      "ln_gelu",
      [f32](uintptr_t y, uintptr_t gamma, uintptr_t beta, int64_t rows, int64_t C, int64_t y_sr, float eps,
            int dtype) {
        const LnGeluArgs a{reinterpret_cast<void*>(y), f32(gamma), f32(beta), rows, C, y_sr, eps, dtype};
        run_nogil(ln_gelu_cpu, a);
      },
      "y[r, :] = GELU(LayerNorm(y[r, :])) in place (y float32, bfloat16 or float16, computed in float32; "
      "gamma, beta float32)",
      py::arg("y"), py::arg("gamma"), py::arg("beta"), py::arg("rows"), py::arg("C"), py::arg("y_sr"),
      py::arg("eps"), py::arg("dtype") = 0);
  m.def(
      "conv0_ln_gelu",
      [f32](uintptr_t x, uintptr_t w, uintptr_t bias, uintptr_t gamma, uintptr_t beta, uintptr_t out, int64_t N,
            int64_t S, int64_t T, int64_t C, int64_t K, int64_t stride, int64_t x_sn, int64_t x_ss, float eps,
            int out_dtype) {
        const Conv0Args a{f32(x),  f32(w), f32(bias), f32(gamma), f32(beta), reinterpret_cast<void*>(out),
                          N,       S,      T,         C,          K,          stride,
                          x_sn,    x_ss,   eps,       out_dtype};
        run_nogil(conv0_ln_gelu_cpu, a);
      },
      "out[n, t, :] = GELU(LayerNorm(conv1d(x[n], w, stride)[t])) (float32 in, one input channel; out float32, "
      "or bfloat16 / float16 rounded once)",
      py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("gamma"), py::arg("beta"), py::arg("out"), py::arg("N"),
      py::arg("S"), py::arg("T"), py::arg("C"), py::arg("K"), py::arg("stride"), py::arg("x_sn"), py::arg("x_ss"),
      py::arg("eps"), py::arg("out_dtype") = 0);
  // decode_glue.h
  m.def(
      "dec_attn",
      [f32](uintptr_t y, int64_t ldy, const LoraTuple& l, uintptr_t cos, uintptr_t sin, uintptr_t kc, uintptr_t vc,
                  uintptr_t slots, int64_t Lq, int64_t attend_len, int64_t max_len, uintptr_t mask, int64_t mask_sb,
                  int64_t mask_sl, uintptr_t out, int64_t M, int64_t H, int64_t Hkv, int64_t D, int attend) {
        const DecAttnArgs a{f32(y),
                            ldy,
                            dec_lora(l),
                            f32(cos),
                            f32(sin),
                            f32(kc),
                            f32(vc),
                            reinterpret_cast<const int64_t*>(slots),
                            Lq,
                            attend_len,
                            max_len,
                            reinterpret_cast<const uint8_t*>(mask),
                            mask_sb,
                            mask_sl,
                            f32(out),
                            M,
                            H,
                            Hkv,
                            D,
                            attend};
        run_nogil(dec_attn_cpu, a);
      },
      "LoRA term, RoPE, k/v into the cache at each token's slot, attention over it unless attend=0 (decode_glue.h)");
  m.def(
      "dec_add_norm",
      [f32](uintptr_t y, int64_t ldy, const LoraTuple& l, uintptr_t x, uintptr_t norm_w, uintptr_t out, int64_t M,
                  int64_t d, float eps) {
        const DecAddNormArgs a{f32(y), ldy, dec_lora(l), f32(x), f32(norm_w), f32(out), M, d, eps};
        run_nogil(dec_add_norm_cpu, a);
      },
      "decode step: LoRA term, x += y, out = RMSNorm(x)·w (decode_glue.h)");
  m.def(
      "dec_silu_mul",
      [f32](uintptr_t y, int64_t ldy, const LoraTuple& l, uintptr_t out, int64_t M, int64_t inter) {
        const DecSiluMulArgs a{f32(y), ldy, dec_lora(l), f32(out), M, inter};
        run_nogil(dec_silu_mul_cpu, a);
      },
      "decode step: LoRA term, out = silu(gate)·up (decode_glue.h)");
}

}  // namespace affectrt
