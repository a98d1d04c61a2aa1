// Row conversions between float32 and the 16-bit dtypes on the CPU, vectorised: what a kernel that computes
// in float32 on bfloat16 / float16 tensors does at its edges (rows_linear_cpu.cpp). Each TU gets its own copy.
//
// - bfloat16 -> float32 is a 16-bit shift; float32 -> bfloat16 rounds to nearest even (NaN stays NaN), as
//   common.h host_float_to_bf16. Both are plain integer loops that GCC vectorises in each target clone.
// - float16 <-> float32 use the F16C / AVX-512 conversion instructions (vcvtph2ps, vcvtps2ph to nearest
//   even), picked once by cpu_isa() (so AFFECTRT_CPU_ISA caps them too); the baseline build converts
//   element by element (common.h host_half_to_float / host_float_to_half): the same values, slower.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace affectrt {
namespace {

typedef uint32_t u32_alias __attribute__((may_alias));

AFFECTRT_CLONES void bf16_to_f32(const uint16_t* __restrict src, float* __restrict dst, int64_t n) {
  u32_alias* o = reinterpret_cast<u32_alias*>(dst);
  for (int64_t k = 0; k < n; ++k) o[k] = static_cast<uint32_t>(src[k]) << 16;
}

AFFECTRT_CLONES void f32_to_bf16(const float* __restrict src, uint16_t* __restrict dst, int64_t n) {
  const u32_alias* in = reinterpret_cast<const u32_alias*>(src);
  for (int64_t k = 0; k < n; ++k) {
    const uint32_t x = in[k];
    const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    const uint32_t quiet = (x >> 16) | 0x40u;  // a NaN keeps its sign and stays a NaN
    dst[k] = static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
  }
}

void f16_to_f32_base(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t k = 0; k < n; ++k) dst[k] = host_half_to_float(src[k]);
}

void f32_to_f16_base(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t k = 0; k < n; ++k) dst[k] = host_float_to_half(src[k]);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define AFFECTRT_F16C_CLONES 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's own avx512fintrin.h, on _mm512_cvtph_ps
__attribute__((target("avx512f,f16c"))) void f16_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    _mm512_storeu_ps(dst + k, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k))));
  for (; k < n; ++k) dst[k] = _cvtsh_ss(src[k]);
}

__attribute__((target("avx512f,f16c"))) void f32_to_f16_avx512(const float* src, uint16_t* dst, int64_t n) {
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + k), _MM_FROUND_TO_NEAREST_INT));
  for (; k < n; ++k) dst[k] = _cvtss_sh(src[k], _MM_FROUND_TO_NEAREST_INT);
}

__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  for (; k < n; ++k) dst[k] = _cvtsh_ss(src[k]);
}

__attribute__((target("avx,f16c"))) void f32_to_f16_f16c(const float* src, uint16_t* dst, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + k), _MM_FROUND_TO_NEAREST_INT));
  for (; k < n; ++k) dst[k] = _cvtss_sh(src[k], _MM_FROUND_TO_NEAREST_INT);
}
#pragma GCC diagnostic pop
#endif

struct HalfConverters {
  void (*to_f32)(const uint16_t*, float*, int64_t);
  void (*from_f32)(const float*, uint16_t*, int64_t);
};

const HalfConverters& half_converters() {
  static const HalfConverters c = [] {
#ifdef AFFECTRT_F16C_CLONES
    // Every CPU with AVX2 has F16C; checked anyway, the baseline is always right.
    if (cpu_isa() >= 1 && __builtin_cpu_supports("f16c")) {
      if (cpu_isa() == 2) return HalfConverters{f16_to_f32_avx512, f32_to_f16_avx512};
      return HalfConverters{f16_to_f32_f16c, f32_to_f16_f16c};
    }
#endif
    return HalfConverters{f16_to_f32_base, f32_to_f16_base};
  }();
  return c;
}

// dst[0..n) = src[0..n) as float32; src of `dtype` (float32 rows are copied).
inline void row_to_f32(const void* src, int dtype, float* dst, int64_t n) {
  if (dtype == kBFloat16)
    bf16_to_f32(static_cast<const uint16_t*>(src), dst, n);
  else if (dtype == kFloat16)
    half_converters().to_f32(static_cast<const uint16_t*>(src), dst, n);
  else
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

// dst[0..n) (of `dtype`) = src[0..n) rounded to nearest even.
inline void row_from_f32(const float* src, int dtype, void* dst, int64_t n) {
  if (dtype == kBFloat16)
    f32_to_bf16(src, static_cast<uint16_t*>(dst), n);
  else if (dtype == kFloat16)
    half_converters().from_f32(src, static_cast<uint16_t*>(dst), n);
  else
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

inline int64_t dtype_bytes(int dtype) { return dtype == kFloat32 ? 4 : 2; }

// A per-thread float row of at least n elements, kept across calls: where a 16-bit row is widened, computed in
// float32 and rounded back.
inline float* row_buffer(int64_t n) {
  static thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

// ------------------------------------------------------------------ dot products on 16-bit rows

// w · x for a bfloat16 (BF) or float16 weight row w [K] and a float32 row x [K]: each weight vector widened in
// registers (no round trip through memory), four accumulators, and a software prefetch 1 KB ahead. On the
// 2-core Xeon (`medium` shapes, one row): 18.5 GB/s; a row converted into a buffer first and then dotted read
// 15-18 GB/s in a scratch test, and a prefetch 4 KB ahead 14 GB/s.
constexpr int64_t kPrefetch16 = 512;  // elements ahead (1 KB)

template <bool BF>
float dot16_base(const uint16_t* w, const float* x, int64_t K) {
  float s = 0.0f;
  for (int64_t k = 0; k < K; ++k) s += (BF ? host_bf16_to_float(w[k]) : host_half_to_float(w[k])) * x[k];
  return s;
}

#ifdef AFFECTRT_F16C_CLONES
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <bool BF>
__attribute__((target("avx512f,avx512vl,avx2,fma,f16c"))) inline __m512 widen16_avx512(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (BF) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

template <bool BF>
__attribute__((target("avx512f,avx512vl,avx2,fma,f16c"))) float dot16_avx512(const uint16_t* w, const float* x,
                                                                             int64_t K) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    __builtin_prefetch(w + k + kPrefetch16);
    __builtin_prefetch(w + k + kPrefetch16 + 32);
    for (int u = 0; u < 4; ++u)
      acc[u] = _mm512_fmadd_ps(widen16_avx512<BF>(w + k + 16 * u), _mm512_loadu_ps(x + k + 16 * u), acc[u]);
  }
  for (; k + 16 <= K; k += 16) acc[0] = _mm512_fmadd_ps(widen16_avx512<BF>(w + k), _mm512_loadu_ps(x + k), acc[0]);
  const __m512 v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
  float lanes[16];
  _mm512_storeu_ps(lanes, v);
  float s = 0.0f;
  for (int l = 0; l < 16; ++l) s += lanes[l];
  for (; k < K; ++k) s += (BF ? host_bf16_to_float(w[k]) : _cvtsh_ss(w[k])) * x[k];
  return s;
}

template <bool BF>
__attribute__((target("avx2,fma,f16c"))) inline __m256 widen16_avx2(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (BF) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

template <bool BF>
__attribute__((target("avx2,fma,f16c"))) float dot16_avx2(const uint16_t* w, const float* x, int64_t K) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __builtin_prefetch(w + k + kPrefetch16);
    for (int u = 0; u < 4; ++u)
      acc[u] = _mm256_fmadd_ps(widen16_avx2<BF>(w + k + 8 * u), _mm256_loadu_ps(x + k + 8 * u), acc[u]);
  }
  for (; k + 8 <= K; k += 8) acc[0] = _mm256_fmadd_ps(widen16_avx2<BF>(w + k), _mm256_loadu_ps(x + k), acc[0]);
  const __m256 v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  float lanes[4];
  _mm_storeu_ps(lanes, q);
  float s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; k < K; ++k) s += (BF ? host_bf16_to_float(w[k]) : _cvtsh_ss(w[k])) * x[k];
  return s;
}
#pragma GCC diagnostic pop
#endif

using Dot16 = float (*)(const uint16_t*, const float*, int64_t);

// The dot product for 16-bit rows of `dtype` (kBFloat16 or kFloat16) on this CPU (cpu_isa(), F16C).
inline Dot16 dot16(int dtype) {
  struct Pair {
    Dot16 bf, f16;
  };
  static const Pair p = [] {
#ifdef AFFECTRT_F16C_CLONES
    if (cpu_isa() >= 1 && __builtin_cpu_supports("f16c")) {
      if (cpu_isa() == 2) return Pair{dot16_avx512<true>, dot16_avx512<false>};
      return Pair{dot16_avx2<true>, dot16_avx2<false>};
    }
#endif
    return Pair{dot16_base<true>, dot16_base<false>};
  }();
  return dtype == kBFloat16 ? p.bf : p.f16;
}

}  // namespace
}  // namespace affectrt
