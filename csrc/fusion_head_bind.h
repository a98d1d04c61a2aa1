// pybind11 bindings of fusion_head.h, included by bindings_cpu.cpp / bindings_cuda.cpp: each adds one
// function `fusion_head(ptrs, dims, strides, dtype[, stream])` taking the flat lists affectrt.ops passes.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "fusion_head.h"

namespace affectrt {

// ptrs: zv, za, 16 weights (wva bva Wv cv waa baa Wa ca Wmv bmv Wma bma Wg bg Wmp bmp), out, rows, work;
// dims: B Tv Ta dv da dm D; strides: zv(3) za(3) wva waa Wv(2) Wa(2) Wmv(2) Wma(2) Wg(2) Wmp(2) out(3).
inline FusionHeadArgs fusion_head_args(const std::vector<uintptr_t>& p, const std::vector<int64_t>& d,
                                       const std::vector<int64_t>& s) {
  if (p.size() != 21 || d.size() != 7 || s.size() != 23)
    throw std::invalid_argument("fusion_head: expected 21 pointers, 7 dims and 23 strides, got " +
                                std::to_string(p.size()) + ", " + std::to_string(d.size()) + ", " +
                                std::to_string(s.size()));
  auto c = [&](int i) { return reinterpret_cast<const void*>(p[i]); };
  FusionHeadArgs a{};
  a.zv = c(0), a.za = c(1);
  a.wva = c(2), a.bva = c(3), a.Wv = c(4), a.cv = c(5);
  a.waa = c(6), a.baa = c(7), a.Wa = c(8), a.ca = c(9);
  a.Wmv = c(10), a.bmv = c(11), a.Wma = c(12), a.bma = c(13);
  a.Wg = c(14), a.bg = c(15), a.Wmp = c(16), a.bmp = c(17);
  a.out = reinterpret_cast<void*>(p[18]);
  a.rows = reinterpret_cast<const int64_t*>(p[19]);
  a.work = reinterpret_cast<float*>(p[20]);
  a.B = d[0], a.Tv = d[1], a.Ta = d[2], a.dv = d[3], a.da = d[4], a.dm = d[5], a.D = d[6];
  a.zv_sb = s[0], a.zv_st = s[1], a.zv_sd = s[2], a.za_sb = s[3], a.za_st = s[4], a.za_sd = s[5];
  a.wva_sd = s[6], a.waa_sd = s[7];
  a.Wv_sn = s[8], a.Wv_sk = s[9], a.Wa_sn = s[10], a.Wa_sk = s[11];
  a.Wmv_sn = s[12], a.Wmv_sk = s[13], a.Wma_sn = s[14], a.Wma_sk = s[15];
  a.Wg_sn = s[16], a.Wg_sk = s[17], a.Wmp_sn = s[18], a.Wmp_sk = s[19];
  a.o_sb = s[20], a.o_sl = s[21], a.o_sd = s[22];
  return a;
}

inline void bind_fusion_head_cpu(pybind11::module_& mod) {
  mod.def(
      "fusion_head",
      [](const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& dims, const std::vector<int64_t>& strides,
         int dtype) {
        const FusionHeadArgs a = fusion_head_args(ptrs, dims, strides);
        const char* err;
        {
          pybind11::gil_scoped_release nogil;
          err = fusion_head_cpu(a, dtype);
        }
        if (err) throw std::invalid_argument(err);
      },
      "fused fusion head: out[b, rows[b, j]] for j = multi, audio, video", pybind11::arg("ptrs"),
      pybind11::arg("dims"), pybind11::arg("strides"), pybind11::arg("dtype"));
}

#ifdef AFFECTRT_FUSION_HEAD_WITH_CUDA
inline void bind_fusion_head_cuda(pybind11::module_& mod) {
  mod.def(
      "fusion_head",
      [](const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& dims, const std::vector<int64_t>& strides,
         int dtype, uintptr_t stream) {
        const char* err = fusion_head_cuda(fusion_head_args(ptrs, dims, strides), dtype, stream);  // launches only
        if (err) throw std::runtime_error(std::string("fusion_head (CUDA): ") + err);
      },
      "fused fusion head, launched on `stream`", pybind11::arg("ptrs"), pybind11::arg("dims"),
      pybind11::arg("strides"), pybind11::arg("dtype"), pybind11::arg("stream"));
}
#endif

}  // namespace affectrt
