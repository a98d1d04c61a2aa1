// Shared by the CPU (g++) and CUDA (nvcc) builds: the host/device qualifier, dtype codes and
// float <-> half/bfloat16 conversions that work on both sides.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define AFFECTRT_HD __host__ __device__
#else
#define AFFECTRT_HD
#endif

// SIMD width is picked at load time for the CPU kernels: the build flags are generic x86-64, the machines
// are not (AVX-512 and AVX2+FMA clones, plus the baseline).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__CUDACC__)
#define AFFECTRT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define AFFECTRT_CLONES
#endif

namespace affectrt {

#ifndef __CUDACC__
// The widest kernel set this CPU runs: 2 AVX-512, 1 AVX2+FMA, 0 baseline. AFFECTRT_CPU_ISA=avx2|base caps it
// (read once per process), so that one machine can test the kernels other CPUs take (tests/ops/test_isa.py).
inline int cpu_isa() {
  static const int isa = [] {
    int best = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
    if (best == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) best = 2;
#endif
    const char* cap = std::getenv("AFFECTRT_CPU_ISA");
    if (cap && std::strcmp(cap, "avx2") == 0) best = best < 1 ? best : 1;
    if (cap && std::strcmp(cap, "base") == 0) best = 0;
    return best;
  }();
  return isa;
}
#endif

// Dtype codes passed from Python (affectrt/ops/_ext.py DTYPE_CODES must match).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Whether `code` is one of the DType codes above (kernels taking float32 or 16-bit rows check their argument).
inline bool known_dtype(int code) { return code == kFloat32 || code == kFloat16 || code == kBFloat16; }

// Bit-level conversions for the host side: the CPU build has no half type of its own.
inline float host_half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {  // inf / nan
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {  // normal
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: renormalise
    exp = 113u;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t host_float_to_half(float f) {  // round to nearest even, like __float2half_rn
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);  // nan / inf
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504 -> inf
  if (ax < 0x38800000u) {  // result is subnormal or zero: shift the full mantissa into place
    if (ax < 0x33000000u) return sign;  // below half of the smallest subnormal
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return sign | (uint16_t)r;
  }
  uint32_t r = ((ax >> 13) - (112u << 10));  // rebias exponent 127 -> 15
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return sign | (uint16_t)r;
}

inline float host_bf16_to_float(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t host_float_to_bf16(float f) {  // round to nearest even, nan stays nan
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

// Storage traits: each dtype is stored as `storage` and computed in float.
struct F32 {
  using storage = float;
  static AFFECTRT_HD inline float load(storage v) { return v; }
  static AFFECTRT_HD inline storage store(float v) { return v; }
};

struct F16 {
  using storage = uint16_t;
  static AFFECTRT_HD inline float load(storage v) {
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(v));
#else
    return host_half_to_float(v);
#endif
  }
  static AFFECTRT_HD inline storage store(float v) {
#ifdef __CUDA_ARCH__
    return __half_as_ushort(__float2half_rn(v));
#else
    return host_float_to_half(v);
#endif
  }
};

struct BF16 {
  using storage = uint16_t;
  static AFFECTRT_HD inline float load(storage v) {
#ifdef __CUDA_ARCH__
    return __bfloat162float(__ushort_as_bfloat16(v));
#else
    return host_bf16_to_float(v);
#endif
  }
  static AFFECTRT_HD inline storage store(float v) {
#ifdef __CUDA_ARCH__
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
#else
    return host_float_to_bf16(v);
#endif
  }
};

}  // namespace affectrt
