// llama.cpp's Q4_0 x Q8_0 with i8mm (ggml_vec_dot_q4_0_q8_0, nrc == 2): one iteration = one
// block of 32 weights in each of 2 weight rows against 2 activation rows (2x2 outputs),
// transcribed as its instruction mix: the 18-byte weight blocks' nibbles split and offset by 8
// here, the rest in llama_i8mm_2x2_block.s.
ldr   h0, [x0]
ldr   h1, [x1]
ldr   h10, [x2]
ldr   h11, [x3]
ldur  q3, [x0, #2]
ldur  q15, [x1, #2]
ldur  q4, [x2, #2]
ldur  q5, [x2, #18]
ldur  q13, [x3, #2]
ldur  q14, [x3, #18]
and   v2.16b, v3.16b, v8.16b
ushr  v3.16b, v3.16b, #4
and   v12.16b, v15.16b, v8.16b
ushr  v15.16b, v15.16b, #4
sub   v2.16b, v2.16b, v9.16b
sub   v3.16b, v3.16b, v9.16b
sub   v12.16b, v12.16b, v9.16b
sub   v15.16b, v15.16b, v9.16b
add   x0, x0, #18
add   x1, x1, #18
add   x2, x2, #34
add   x3, x3, #34
