/* Stand-in for <EGL/eglext.h>: the types cudaEGL.h names (see shim/interop_types/README.md). */
#ifndef __eglext_h_
#define __eglext_h_
typedef void* EGLImageKHR;
typedef void* EGLStreamKHR;
typedef void* EGLSyncKHR;
#endif
