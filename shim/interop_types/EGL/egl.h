/* Stand-in for <EGL/egl.h>: the types cudaEGL.h names (see shim/interop_types/README.md). */
#ifndef __egl_h_
#define __egl_h_
#include <stdint.h>
typedef int32_t EGLint;
#endif
