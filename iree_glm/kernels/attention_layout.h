// The flash-attention kernels' tile and stack layout, shared by every kernel set's attention.c and
// its vector helpers (attention_tile.h is the driver): ROWS query rows a call computes (the pass's
// ROWS, passes/attention_kernel.py), keys per BLOCK, the widest head MAX_D (the pass's MAX_D).
// The stack buffers are row-minor, [.][ROWS]: a vector holds consecutive query rows.
#ifndef IREE_GLM_ATTENTION_LAYOUT_H_
#define IREE_GLM_ATTENTION_LAYOUT_H_

enum { ROWS = 32, BLOCK = 64, MAX_D = 128 };
#define LOG2E 1.44269504088896341f  // scores and mask are kept in base 2: softmax by exp2

#endif  // IREE_GLM_ATTENTION_LAYOUT_H_
