// Branch-free float32 exp, erf, GELU and quick GELU for the CPU kernels' elementwise epilogues.
//
// Written as straight-line arithmetic (clamps instead of branches, the exponent built with integer ops) so
// that GCC vectorises a `#pragma omp simd` loop over them; libm's expf/erff are scalar calls that would
// make an epilogue slower than the separate torch passes it replaces. Accuracy (tests/ops/test_epilogues.py
// checks it against float64 over the whole float32 range that matters): exp within 2 ulp, erf within
// 2e-7 absolute, so GELU and quick GELU stay within a few ulp of torch's.
#pragma once

#include <cmath>
#include <cstdint>

namespace affectrt {

// e^x: x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two so r stays exact), e^r from Cephes' degree-6
// polynomial, 2^n put straight into the exponent bits. x is clamped to where e^x is a normal float.
// (Clamps are comparisons, not std::fmin/fmax: those keep NaN semantics through a libm call, which stops
// vectorisation.)
inline float clamp_f32(float x, float lo, float hi) {
  const float y = x < lo ? lo : x;
  return y > hi ? hi : y;
}

inline float exp_f32(float x) {
  x = clamp_f32(x, -87.33f, 88.37f);
  const float n = std::floor(std::fma(x, 1.44269504088896341f, 0.5f));
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// erf(x) as an odd rational function of x on [-4, 4] (erf is within 2e-8 of ±1 beyond): erf = x·P(x²)/Q(x²).
inline float erf_f32(float x) {
  x = clamp_f32(x, -4.0f, 4.0f);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = std::fma(p, x2, 2.77068142495902e-08f);
  p = std::fma(p, x2, -2.10102402082508e-06f);
  p = std::fma(p, x2, -5.69250639462346e-05f);
  p = std::fma(p, x2, -7.34990630326855e-04f);
  p = std::fma(p, x2, -2.95459980854025e-03f);
  p = std::fma(p, x2, -1.60960333262415e-02f);
  float q = -1.45660718464996e-05f;
  q = std::fma(q, x2, -2.13374055278905e-04f);
  q = std::fma(q, x2, -1.68282697438203e-03f);
  q = std::fma(q, x2, -7.37332916720468e-03f);
  q = std::fma(q, x2, -1.42647390514189e-02f);
  return x * p / q;
}

// transformers' "gelu" (erf form): x · ½(1 + erf(x/√2)).
inline float gelu_f32(float x) { return x * 0.5f * (1.0f + erf_f32(x * 0.70710678118654752f)); }

// CLIP's quick GELU, x · σ(1.702x), with σ(t) = 1 / (1 + e^-t) as torch computes it.
inline float quick_gelu_f32(float x) { return x * (1.0f / (1.0f + exp_f32(-1.702f * x))); }

// Activation codes passed from Python (affectrt/ops/bias_act.py ACTIVATIONS must match).
enum Activation : int { kIdentity = 0, kGelu = 1, kQuickGelu = 2 };

}  // namespace affectrt
