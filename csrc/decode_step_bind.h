// pybind11 binding of decode_step.h, included by bindings_cpu.cpp: `DecStepPlan`, built once per model by
// affectrt/models/fused_decode.py from raw pointers (whose tensors that module keeps alive), and `dec_step`.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cpu_only_bind.h"
#include "decode_step.h"

namespace affectrt {

// (w, bias, N, K, columns, rows_lo, rows_hi); bias 0 = none
using GemmTuple = std::tuple<uintptr_t, uintptr_t, int64_t, int64_t, int, int64_t, int64_t>;
// (the four stacks' GEMMs, their four LoRA terms, post_norm, next_norm)
using LayerTuple = std::tuple<std::vector<GemmTuple>, std::vector<LoraTuple>, uintptr_t, uintptr_t>;

inline void bind_decode_step(pybind11::module_& m) {
  namespace py = pybind11;
  auto f32 = [](uintptr_t p) { return reinterpret_cast<float*>(p); };
  py::class_<DecStepPlan>(m, "DecStepPlan",
                          "A Qwen2 model's decode step in one call (decode_step.h); pointers, not tensors")
      .def(py::init([f32](const std::vector<LayerTuple>& layers, uintptr_t first_norm, uintptr_t sgemm, int64_t d,
                          int64_t H, int64_t Hkv, int64_t D, int64_t inter, float eps) {
             if (sgemm == 0) throw std::invalid_argument("DecStepPlan: sgemm is a null pointer");
             DecStepPlan p{{}, f32(first_norm), reinterpret_cast<SgemmFn>(sgemm), d, H, Hkv, D, inter, eps};
             for (const auto& [gemms, loras, post, next] : layers) {
               if (gemms.size() != 4 || loras.size() != 4)
                 throw std::invalid_argument("DecStepPlan: each layer needs 4 GEMMs and 4 LoRA terms, got " +
                                             std::to_string(gemms.size()) + " and " +
                                             std::to_string(loras.size()));
               DecLayer L{};
               for (int j = 0; j < 4; ++j) {
                 const auto& [w, bias, N, K, columns, lo, hi] = gemms[j];
                 L.gemm[j] = DecGemm{f32(w), f32(bias), N, K, columns, lo, hi};
                 L.lora[j] = dec_lora(loras[j]);
               }
               L.post_norm = f32(post);
               L.next_norm = f32(next);
               p.layers.push_back(L);
             }
             return p;
           }),
           py::arg("layers"), py::arg("first_norm"), py::arg("sgemm"), py::arg("d"), py::arg("H"), py::arg("Hkv"),
           py::arg("D"), py::arg("inter"), py::arg("eps"));
  m.def(
      "dec_step",
      [f32](const DecStepPlan& p, uintptr_t x, uintptr_t x2, uintptr_t n1, uintptr_t attn, uintptr_t n2, uintptr_t h,
            uintptr_t y, uintptr_t cos, uintptr_t sin, uintptr_t kc, uintptr_t vc, int64_t layer_stride,
            uintptr_t slot, int64_t attend_len, int64_t max_len, uintptr_t mask, int64_t mask_sb, int64_t M) {
        const DecStepArgs a{f32(x),   f32(x2),  f32(n1),
                            f32(attn), f32(n2), f32(h),
                            f32(y),   f32(cos), f32(sin),
                            f32(kc),  f32(vc),  layer_stride,
                            reinterpret_cast<const int64_t*>(slot), attend_len, max_len,
                            reinterpret_cast<const uint8_t*>(mask), mask_sb, M};
        const char* err;
        {
          py::gil_scoped_release nogil;
          err = dec_step_cpu(p, a);
        }
        check(err);
      },
      "one decode step of M rows over a DecStepPlan: every layer's GEMMs and glue; the final-norm hidden states "
      "into n1 (decode_step.h)",
      py::arg("plan"), py::arg("x"), py::arg("x2"), py::arg("n1"), py::arg("attn"), py::arg("n2"), py::arg("h"),
      py::arg("y"), py::arg("cos"), py::arg("sin"), py::arg("k_cache"), py::arg("v_cache"), py::arg("layer_stride"),
      py::arg("slot"), py::arg("attend_len"), py::arg("max_len"), py::arg("mask"), py::arg("mask_sb"),
      py::arg("M"));
}

}  // namespace affectrt
