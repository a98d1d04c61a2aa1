// pybind11 module affectrt._C_cuda: the CUDA kernels. Takes raw device pointers, shapes, strides and a
// cudaStream_t as an integer; links the CUDA runtime, not libtorch.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "attn_pool.h"
#define AFFECTRT_CROSS_ATTN_WITH_CUDA
#include "cross_attn_bind.h"
#define AFFECTRT_FUSION_HEAD_WITH_CUDA
#include "fusion_head_bind.h"
#include "runtime_cuda.h"

namespace py = pybind11;
using affectrt::AttnPoolArgs;

static void attn_pool(uintptr_t z, uintptr_t w, uintptr_t bias, uintptr_t out, int64_t B, int64_t T,
                      int64_t D, int64_t z_sb, int64_t z_st, int64_t z_sd, int64_t w_sd, int dtype,
                      uintptr_t stream) {
  const AttnPoolArgs a{reinterpret_cast<const void*>(z), reinterpret_cast<const void*>(w),
                       reinterpret_cast<const void*>(bias), reinterpret_cast<void*>(out),
                       B, T, D, z_sb, z_st, z_sd, w_sd};
  const char* err = affectrt::attn_pool_cuda(a, dtype, stream);  // asynchronous: only launches
  if (err) throw std::runtime_error(std::string("attn_pool (CUDA): ") + err);
}

static py::tuple device_count() {
  const char* err = nullptr;
  const int n = affectrt::cuda_device_count(&err);
  return py::make_tuple(n, err ? py::str(err) : py::object(py::none()));
}

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "affectrt CUDA kernels; pointers, shapes, strides and the stream come from affectrt.ops";
  m.def("attn_pool", &attn_pool, "out[b,d] = sum_t (z[b,t,:]·w + bias) z[b,t,d], launched on `stream`",
        py::arg("z"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("B"), py::arg("T"),
        py::arg("D"), py::arg("z_sb"), py::arg("z_st"), py::arg("z_sd"), py::arg("w_sd"), py::arg("dtype"),
        py::arg("stream"));
  affectrt::bind_cross_attn_cuda(m);
  affectrt::bind_fusion_head_cuda(m);
  m.def("runtime_version", &affectrt::cuda_runtime_version, "CUDA runtime version (e.g. 13000)");
  m.def("driver_version", &affectrt::cuda_driver_version, "CUDA driver version, 0 when none is installed");
  m.def("device_count", &device_count, "(count, None) or (-1, error text)");
  m.attr("functions") = py::make_tuple("attn_pool", "fusion_head", "cross_attn");
}
