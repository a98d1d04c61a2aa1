// pybind11 module affectrt._C: the CPU kernels. Takes raw pointers, shapes and strides; links no libtorch.
#include <pybind11/pybind11.h>

#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn_pool.h"
#include "cross_attn_bind.h"
#include "cpu_only_bind.h"
#include "decode_step_bind.h"
#include "fusion_head_bind.h"

namespace py = pybind11;
using affectrt::AttnPoolArgs;

static void attn_pool(uintptr_t z, uintptr_t w, uintptr_t bias, uintptr_t out, int64_t B, int64_t T,
                      int64_t D, int64_t z_sb, int64_t z_st, int64_t z_sd, int64_t w_sd, int dtype) {
  const AttnPoolArgs a{reinterpret_cast<const void*>(z), reinterpret_cast<const void*>(w),
                       reinterpret_cast<const void*>(bias), reinterpret_cast<void*>(out),
                       B, T, D, z_sb, z_st, z_sd, w_sd};
  const char* err;
  {
    py::gil_scoped_release nogil;
    err = affectrt::attn_pool_cpu(a, dtype);
  }
  if (err) throw std::invalid_argument(err);
}

static int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "affectrt CPU kernels (OpenMP); pointers, shapes and strides come from affectrt.ops";
  m.def("attn_pool", &attn_pool, "out[b,d] = sum_t (z[b,t,:]·w + bias) z[b,t,d]", py::arg("z"),
        py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("B"), py::arg("T"), py::arg("D"),
        py::arg("z_sb"), py::arg("z_st"), py::arg("z_sd"), py::arg("w_sd"), py::arg("dtype"));
  affectrt::bind_cross_attn_cpu(m);
  affectrt::bind_fusion_head_cpu(m);
  affectrt::bind_cpu_only(m);
  affectrt::bind_decode_step(m);
  m.def("num_threads", &num_threads, "OpenMP threads a kernel will use (1 without OpenMP)");
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.attr("functions") =
      py::make_tuple("attn_pool", "fusion_head", "cross_attn", "bias_act", "ln_gelu", "conv0_ln_gelu",
                                       "rows_linear", "dec_attn", "dec_add_norm", "dec_silu_mul", "dec_step");
}
