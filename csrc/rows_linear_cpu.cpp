// CPU launcher for rows_linear.h: each thread streams one contiguous range of weight rows (the prefetch of
// one thread then never runs into the other's rows), as dot products for one row and through the
// register-tiled micro-kernel over x^T from kRowsGemmMinM rows. 16-bit weights: one row dotted straight from
// its 16-bit elements (cpu_convert.h dot16); from two rows each tile's weight rows are widened into a buffer
// first (correct, but at 16 rows on the 2-core Xeon 7.3 GB/s of bf16 against 13.8 for torch's AMX path:
// packed.py gives this kernel 16-bit weights for one row only).
#include <omp.h>

#include <algorithm>

#include "cpu_convert.h"
#include "cpu_gemm.h"
#include "rows_linear.h"

namespace affectrt {
namespace {

constexpr int64_t kRowsGemmMinM = 2;   // one row: dot products (cpu_gemm.h gemv)
constexpr int64_t kTileRows = 48;      // weight rows per stored block (c [kTileRows, Mp] stays in L1/L2)

// c[j·ldc + m] = Σ_k w_j[k] · xt[k·ldx + m] for NR weight rows w_j = w + min(j, rows − 1)·ldw and the
// MV·W columns m of xt [K, ldx]: one pass over the NR rows with NR·MV accumulators in registers. At M <= 16
// (MV = 1) 12 rows keep 12 FMA chains going; measured on the `medium` decode shapes (2-core Xeon, M = 16)
// 12 rows, 6 rows, two or four k-interleaved accumulator sets and software prefetch all ran at 14-18 GB/s
// against 19-26 GB/s for torch.sum over the same bytes in the same minutes (MKL: 10 GB/s).
template <typename C, int NR, int MV>
AI void tile(const float* w, int64_t ldw, int64_t rows, const float* xt, int64_t ldx, int64_t K, float* c,
             int64_t ldc) {
  using vf = typename C::vf;
  using vf_u = typename C::vf_u;
  const float* r[NR];
  for (int j = 0; j < NR; ++j) r[j] = w + (j < rows ? j : rows - 1) * ldw;
  vf acc[NR][MV] = {};
  for (int64_t k = 0; k < K; ++k) {
    vf xv[MV];
    for (int i = 0; i < MV; ++i) xv[i] = vload<C>(xt + k * ldx + i * C::W);
    for (int j = 0; j < NR; ++j) {
      const vf wj = r[j][k] - vf{};  // a broadcast (see cpu_gemm.h gemm_micro)
      for (int i = 0; i < MV; ++i) acc[j][i] += xv[i] * wj;
    }
  }
  for (int j = 0; j < NR; ++j)
    for (int i = 0; i < MV; ++i) *reinterpret_cast<vf_u*>(c + j * ldc + i * C::W) = acc[j][i];
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t);

#define AFFECTRT_TILE(name, attr, C, NR, MV)                                                            \
  attr void name(const float* w, int64_t ldw, int64_t rows, const float* xt, int64_t ldx, int64_t K,     \
                 float* c, int64_t ldc) {                                                                \
    tile<C, NR, MV>(w, ldw, rows, xt, ldx, K, c, ldc);                                                   \
  }

#ifdef AFFECTRT_ISA_CLONES
#define AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
AFFECTRT_TILE(avx512_12x1, AVX512, CfgAvx512, 12, 1)  // 12 accumulators + 1 input + 1 broadcast of 32
AFFECTRT_TILE(avx512_12x2, AVX512, CfgAvx512, 12, 2)  // 24 + 2 + 1
AFFECTRT_TILE(avx512_6x4, AVX512, CfgAvx512, 6, 4)    // 24 + 4 + 1
AFFECTRT_TILE(avx2_12x1, AVX2, CfgAvx2, 12, 1)        // 12 + 1 + 1 of 16
AFFECTRT_TILE(avx2_6x2, AVX2, CfgAvx2, 6, 2)          // 12 + 2 + 1
AFFECTRT_TILE(avx2_3x4, AVX2, CfgAvx2, 3, 4)          // 12 + 4 + 1
#endif
AFFECTRT_TILE(base_6x2, , CfgBase, 6, 2)

// The tile for M rows on this CPU: its function, weight rows, columns per call, and the padded column
// count (a multiple of the columns; wider inputs take several calls per weight tile).
struct Tile {
  TileFn fn;
  int nr;
  int64_t cols, mp;
};

Tile pick_tile(int64_t M) {
  const auto pad = [M](int64_t w) { return (M + w - 1) / w * w; };
#ifdef AFFECTRT_ISA_CLONES
  if (cpu_isa() == 2) {
    if (M <= 16) return {avx512_12x1, 12, 16, 16};
    if (M <= 32) return {avx512_12x2, 12, 32, 32};
    return {avx512_6x4, 6, 64, pad(64)};
  }
  if (cpu_isa() == 1) {
    if (M <= 8) return {avx2_12x1, 12, 8, 8};
    if (M <= 16) return {avx2_6x2, 6, 16, 16};
    return {avx2_3x4, 3, 32, pad(32)};
  }
#endif
  return {base_6x2, 6, 8, pad(8)};
}

// [n0, n1) of N for thread t of nt: equal shares of whole tiles of nr rows.
inline void share(int64_t N, int64_t nr, int t, int nt, int64_t* n0, int64_t* n1) {
  const int64_t tiles = (N + nr - 1) / nr;
  *n0 = std::min(N, tiles * t / nt * nr);
  *n1 = std::min(N, tiles * (t + 1) / nt * nr);
}

// The bias of rows [n0, n1) as float32 into dst (zeros without one).
void bias_rows(const RowsLinearArgs& a, int64_t n0, int64_t n1, float* dst) {
  if (a.bias == nullptr) {
    std::fill(dst, dst + (n1 - n0), 0.0f);
    return;
  }
  row_to_f32(static_cast<const char*>(a.bias) + n0 * dtype_bytes(a.dtype), a.dtype, dst, n1 - n0);
}

// Weight rows n.. (`rows` of them, each K long) as float32 rows ldw apart: the rows themselves for float32,
// else widened into buf [rows, K] (ldw = K).
const float* weight_rows(const RowsLinearArgs& a, int64_t n, int64_t rows, float* buf, int64_t* ldw) {
  if (a.dtype == kFloat32) {
    *ldw = a.ldw;
    return static_cast<const float*>(a.w) + n * a.ldw;
  }
  const auto* w = static_cast<const char*>(a.w) + n * a.ldw * 2;
  for (int64_t j = 0; j < rows; ++j) row_to_f32(w + j * a.ldw * 2, a.dtype, buf + j * a.K, a.K);
  *ldw = a.K;
  return buf;
}

// y[m, n0 .. n0 + n) = vals[0 .. n), in y's dtype.
inline void store_row(const RowsLinearArgs& a, int64_t m, int64_t n0, const float* vals, int64_t n) {
  char* dst = static_cast<char*>(a.y) + (m * a.ldy + n0) * dtype_bytes(a.dtype);
  row_from_f32(vals, a.dtype, dst, n);
}

// x as float32 rows [M, K] (ld K) in xf, or x itself for float32 (ld ldx).
const float* x_rows(const RowsLinearArgs& a, float* xf, int64_t* ldx) {
  if (a.dtype == kFloat32) {
    *ldx = a.ldx;
    return static_cast<const float*>(a.x);
  }
  for (int64_t m = 0; m < a.M; ++m)
    row_to_f32(static_cast<const char*>(a.x) + m * a.ldx * 2, a.dtype, xf + m * a.K, a.K);
  *ldx = a.K;
  return xf;
}

void run_gemv(const RowsLinearArgs& a) {
  const Kernels& kern = kernels();
  const Dot16 dot = a.dtype == kFloat32 ? nullptr : dot16(a.dtype);
  // shared: x as float32 [M, K]; per thread: y and bias of its rows [N] each
  const int64_t shared = round_line(a.M * a.K), per = 2 * round_line(a.N);
  float* s = scratch(static_cast<size_t>(shared + omp_get_max_threads() * per));
  int64_t ldx;
  const float* x = x_rows(a, s, &ldx);
#pragma omp parallel
  {
    float* yv = s + shared + omp_get_thread_num() * per;
    float* bv = yv + round_line(a.N);
    int64_t n0, n1;
    share(a.N, 1, omp_get_thread_num(), omp_get_num_threads(), &n0, &n1);
    bias_rows(a, n0, n1, bv);
    const auto* w16 = static_cast<const uint16_t*>(a.w);
    for (int64_t m = 0; m < a.M; ++m) {  // M < kRowsGemmMinM: one row
      for (int64_t n = n0; n < n1; ++n) {
        float o;
        if (dot)
          o = dot(w16 + n * a.ldw, x + m * ldx, a.K);
        else
          kern.gemv(static_cast<const float*>(a.w) + n * a.ldw, x + m * ldx, ldx, a.K, 1, &o);
        yv[n - n0] = o + bv[n - n0];
      }
      if (n1 > n0) store_row(a, m, n0, yv, n1 - n0);
    }
  }
}

void run_gemm(const RowsLinearArgs& a) {
  const Tile t = pick_tile(a.M);
  const int64_t Mp = t.mp;
  const bool half = a.dtype != kFloat32;
  // shared: x^T [K, Mp] (+ x as float32 [M, K] for 16-bit x); per thread: c [kTileRows, Mp], the tile's
  // widened weight rows [nr, K] (16-bit weights), one output row [kTileRows], the bias of its rows [N]
  const int64_t shared = round_line(a.K * Mp) + (half ? round_line(a.M * a.K) : 0);
  const int64_t per = round_line(kTileRows * Mp) + (half ? round_line(t.nr * a.K) : 0) + round_line(kTileRows) +
                      round_line(a.N);
  float* s = scratch(static_cast<size_t>(shared + omp_get_max_threads() * per));
  float *xt = s, *xf = s + round_line(a.K * Mp);
#pragma omp parallel
  {
    int64_t ldx = a.ldx;
    const float* x = static_cast<const float*>(a.x);
    if (half) {
#pragma omp for schedule(static)
      for (int64_t m = 0; m < a.M; ++m)
        row_to_f32(static_cast<const char*>(a.x) + m * a.ldx * 2, a.dtype, xf + m * a.K, a.K);
      x = xf, ldx = a.K;  // the loop's barrier made every row visible
    }
    // x^T [K, Mp], padding columns zero.
#pragma omp for schedule(static)
    for (int64_t k = 0; k < a.K; ++k) {
      float* dst = xt + k * Mp;
      for (int64_t m = 0; m < a.M; ++m) dst[m] = x[m * ldx + k];
      for (int64_t m = a.M; m < Mp; ++m) dst[m] = 0.0f;
    }
    float* c = s + shared + omp_get_thread_num() * per;
    float* wbuf = c + round_line(kTileRows * Mp);
    float* yrow = wbuf + (half ? round_line(t.nr * a.K) : 0);
    float* bv = yrow + round_line(kTileRows);
    int64_t n0, n1;
    share(a.N, t.nr, omp_get_thread_num(), omp_get_num_threads(), &n0, &n1);
    bias_rows(a, n0, n1, bv);
    for (int64_t b0 = n0; b0 < n1; b0 += kTileRows) {
      const int64_t b1 = std::min(n1, b0 + kTileRows);
      // Tiles may run past b1 (never past N's last row, repeated): c has room, only b1 - b0 rows are kept.
      for (int64_t n = b0; n < b1; n += t.nr) {
        const int64_t rows = std::min<int64_t>(t.nr, a.N - n);
        int64_t ldw;
        const float* w = weight_rows(a, n, rows, wbuf, &ldw);
        for (int64_t m0 = 0; m0 < Mp; m0 += t.cols) t.fn(w, ldw, rows, xt + m0, Mp, a.K, c + (n - b0) * Mp + m0, Mp);
      }
      for (int64_t m = 0; m < a.M; ++m) {  // row m of y gets b1 - b0 contiguous values
        for (int64_t n = b0; n < b1; ++n) yrow[n - b0] = c[(n - b0) * Mp + m] + bv[n - n0];
        store_row(a, m, b0, yrow, b1 - b0);
      }
    }
  }
}

}  // namespace

const char* rows_linear_cpu(const RowsLinearArgs& a) {
  if (a.M <= 0 || a.N <= 0) return nullptr;
  if (a.K <= 0) return "rows_linear_cpu: K must be positive";
  if (a.dtype != kFloat32 && a.dtype != kFloat16 && a.dtype != kBFloat16)
    return "rows_linear_cpu: unsupported dtype code (expected 0=float32, 1=float16, 2=bfloat16)";
  if (a.M < kRowsGemmMinM)
    run_gemv(a);
  else
    run_gemm(a);
  return nullptr;
}

}  // namespace affectrt
