// CUDA runtime facts for `affectrt info`; see runtime_cuda.h.
#include <cuda_runtime.h>

#include "runtime_cuda.h"

namespace affectrt {

int cuda_runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

int cuda_driver_version() {
  int v = 0;
  return cudaDriverGetVersion(&v) == cudaSuccess ? v : 0;
}

int cuda_device_count(const char** error) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error so the next runtime call starts clean
    *error = cudaGetErrorString(err);
    return -1;
  }
  *error = nullptr;
  return n;
}

}  // namespace affectrt
