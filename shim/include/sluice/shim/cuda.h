// The one way sluice code includes the CUDA driver header.
//
// cuda.h normally renames functions to their newest ABI (cuMemAlloc -> cuMemAlloc_v2,
// cuLaunchKernel -> cuLaunchKernel_ptsz under per-thread streams). sluice must name every exported
// variant literally, so it compiles cuda.h the way the driver itself does, with
// __CUDA_API_VERSION_INTERNAL: every symbol is declared under its own name and nothing is renamed.
// Code that calls the driver therefore says which variant it means (cuMemAlloc_v2, not cuMemAlloc).
#pragma once

#if defined(__cuda_cuda_h__) && !defined(__CUDA_API_VERSION_INTERNAL)
#error "include sluice/shim/cuda.h before any other CUDA header"
#endif
#ifndef __CUDA_API_VERSION_INTERNAL
#define __CUDA_API_VERSION_INTERNAL 1
#endif
#include <cuda.h>
#include <cudaProfiler.h>
