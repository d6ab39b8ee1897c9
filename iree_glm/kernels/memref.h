// How IREE passes a buffer to an imported function (`hal.import.static`), shared by every
// kernel of every instruction set: a memref argument arrives as base pointer, aligned pointer,
// offset, size and stride. Our buffers are flat and contiguous, so a kernel needs only the
// aligned pointer moved to the offset (MEMREF_START).
#ifndef IREE_GLM_MEMREF_H_
#define IREE_GLM_MEMREF_H_

#include <stddef.h>

#define MEMREF(T, name) T *name##_base, T *name, size_t name##_offset, size_t name##_size, size_t name##_stride
#define MEMREF_START(name) ((void)name##_base, (void)name##_size, (void)name##_stride, name += name##_offset)

#endif  // IREE_GLM_MEMREF_H_
