// Facts about the CUDA runtime the extension links, for `affectrt info` (implemented in runtime_cuda.cu).
#pragma once

namespace affectrt {

int cuda_runtime_version();                  // e.g. 13000 for 13.0; 0 when the query fails
int cuda_driver_version();                   // 0 when no driver is installed
int cuda_device_count(const char** error);   // -1 and *error set when the query fails

}  // namespace affectrt
