// pybind11 bindings of cross_attn.h, included by bindings_cpu.cpp / bindings_cuda.cpp: each adds one
// function `cross_attn` to its module. Arguments are raw pointers, sizes and element strides.
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "cross_attn.h"

namespace affectrt {

#define AFFECTRT_CROSS_ATTN_PARAMS                                                                        \
  uintptr_t qt, uintptr_t x, uintptr_t keep, uintptr_t a, uintptr_t m, uintptr_t logl, uintptr_t work,     \
      int64_t B, int64_t R, int64_t Nk, int64_t E, int64_t splits, int64_t x_sb, int64_t x_sn, int64_t x_se, \
      int64_t keep_sb, int64_t keep_sn, int dtype
#define AFFECTRT_CROSS_ATTN_ARGS                                                                           \
  CrossAttnArgs {                                                                                          \
    reinterpret_cast<const float*>(qt), reinterpret_cast<const void*>(x),                                  \
        reinterpret_cast<const uint8_t*>(keep), reinterpret_cast<float*>(a), reinterpret_cast<float*>(m),  \
        reinterpret_cast<float*>(logl), reinterpret_cast<float*>(work), B, R, Nk, E, splits, x_sb, x_sn,   \
        x_se, keep_sb, keep_sn                                                                             \
  }
#define AFFECTRT_CROSS_ATTN_PYARGS                                                                          \
  pybind11::arg("qt"), pybind11::arg("x"), pybind11::arg("keep"), pybind11::arg("a"), pybind11::arg("m"),  \
      pybind11::arg("logl"), pybind11::arg("work"), pybind11::arg("B"), pybind11::arg("R"),                \
      pybind11::arg("Nk"), pybind11::arg("E"), pybind11::arg("splits"), pybind11::arg("x_sb"),             \
      pybind11::arg("x_sn"), pybind11::arg("x_se"), pybind11::arg("keep_sb"), pybind11::arg("keep_sn"),    \
      pybind11::arg("dtype")

inline void bind_cross_attn_cpu(pybind11::module_& mod) {
  mod.def(
      "cross_attn",
      [](AFFECTRT_CROSS_ATTN_PARAMS) {
        const CrossAttnArgs args = AFFECTRT_CROSS_ATTN_ARGS;
        const char* err;
        {
          pybind11::gil_scoped_release nogil;
          err = cross_attn_cpu(args, dtype);
        }
        if (err) throw std::invalid_argument(err);
      },
      "A = softmax(qt x^T, padded keys masked) x per batch row (flash-decoding over `splits` key ranges)",
      AFFECTRT_CROSS_ATTN_PYARGS);
}

#ifdef AFFECTRT_CROSS_ATTN_WITH_CUDA
inline void bind_cross_attn_cuda(pybind11::module_& mod) {
  mod.def(
      "cross_attn",
      [](AFFECTRT_CROSS_ATTN_PARAMS, uintptr_t stream) {
        const CrossAttnArgs args = AFFECTRT_CROSS_ATTN_ARGS;
        const char* err = cross_attn_cuda(args, dtype, stream);  // asynchronous: only launches
        if (err) throw std::runtime_error(std::string("cross_attn (CUDA): ") + err);
      },
      "A = softmax(qt x^T, padded keys masked) x per batch row, launched on `stream`",
      AFFECTRT_CROSS_ATTN_PYARGS, pybind11::arg("stream"));
}
#endif

}  // namespace affectrt
