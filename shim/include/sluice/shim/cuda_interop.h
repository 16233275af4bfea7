// The graphics interop headers of the CUDA toolkit (OpenGL, EGL, VDPAU), compiled like cuda.h with
// every ABI variant named literally (see sluice/shim/cuda.h). The driver library exports their entry
// points, so libsluice.so exports and forwards them too. Their OpenGL, EGL and VDPAU types come from
// the stand-ins in shim/interop_types/ (on the include path of sluice_driver_api).
#pragma once

#include "sluice/shim/cuda.h"
// cudaVDPAU.h names the VDPAU types without including their header.
#include <vdpau/vdpau.h>
// clang-format off: cudaEGL.h and cudaGL.h need cuda.h first.
#include <cudaEGL.h>
#include <cudaGL.h>
#include <cudaVDPAU.h>
// clang-format on
