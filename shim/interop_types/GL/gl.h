/* Stand-in for <GL/gl.h>: the types cudaGL.h names (see shim/interop_types/README.md). */
#ifndef __gl_h_
#define __gl_h_
typedef unsigned int GLuint;
typedef unsigned int GLenum;
#endif
