// llama.cpp's Q8_0 x Q8_0 with i8mm (ggml_vec_dot_q8_0_q8_0, nrc == 2): one iteration = one
// block of 32 weights in each of 2 weight rows against 2 activation rows (2x2 outputs),
// transcribed as its instruction mix: the 34-byte blocks' scales and halves loaded here, the
// rest in llama_i8mm_2x2_block.s.
ldr   h0, [x0]
ldr   h1, [x1]
ldr   h10, [x2]
ldr   h11, [x3]
ldur  q2, [x0, #2]
ldur  q3, [x0, #18]
ldur  q12, [x1, #2]
ldur  q15, [x1, #18]
ldur  q4, [x2, #2]
ldur  q5, [x2, #18]
ldur  q13, [x3, #2]
ldur  q14, [x3, #18]
add   x0, x0, #34
add   x1, x1, #34
add   x2, x2, #34
add   x3, x3, #34
