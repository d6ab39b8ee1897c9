// One block of 32 weights of llama.cpp's Q4_0 x Q8_0 NEON dot product (ggml_vec_dot_q4_0_q8_0,
// NEON + dotprod path), transcribed as its instruction mix: 18-byte weight blocks (f16 scale +
// 16 bytes of nibbles), low/high nibbles split and offset by 8, two sdot, scales, one fmla.
ldr   h0, [x0]
ldr   h1, [x1]
ldur  q2, [x0, #2]
ldur  q4, [x1, #2]
ldur  q5, [x1, #18]
and   v3.16b, v2.16b, v8.16b
ushr  v2.16b, v2.16b, #4
sub   v3.16b, v3.16b, v9.16b
sub   v2.16b, v2.16b, v9.16b
movi  v6.2d, #0
sdot  v6.4s, v3.16b, v4.16b
sdot  v6.4s, v2.16b, v5.16b
fcvt  s0, h0
fcvt  s1, h1
fmul  s0, s0, s1
scvtf v6.4s, v6.4s
fmla  v7.4s, v6.4s, v0.s[0]
add   x0, x0, #18
add   x1, x1, #34
