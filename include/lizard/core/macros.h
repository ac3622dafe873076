// Portability macros shared by host code and CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define LZ_HD __host__ __device__ __forceinline__
#else
#define LZ_HD inline
#endif
