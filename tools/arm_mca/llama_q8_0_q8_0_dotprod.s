// One block of 32 weights of llama.cpp's Q8_0 x Q8_0 NEON dot product (ggml_vec_dot_q8_0_q8_0,
// __ARM_FEATURE_DOTPROD path), transcribed as its instruction mix: 34-byte blocks (f16 scale +
// 32 int8) of weights and activations, two sdot, the two scales multiplied, one fmla.
ldr   h0, [x0]
ldr   h1, [x1]
ldur  q2, [x0, #2]
ldur  q3, [x0, #18]
ldur  q4, [x1, #2]
ldur  q5, [x1, #18]
movi  v6.2d, #0
sdot  v6.4s, v2.16b, v4.16b
sdot  v6.4s, v3.16b, v5.16b
fcvt  s0, h0
fcvt  s1, h1
fmul  s0, s0, s1
scvtf v6.4s, v6.4s
fmla  v7.4s, v6.4s, v0.s[0]
add   x0, x0, #34
add   x1, x1, #34
