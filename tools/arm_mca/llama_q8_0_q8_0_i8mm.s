// llama.cpp's Q8_0 x Q8_0 with i8mm (ggml_vec_dot_q8_0_q8_0, nrc == 2): one iteration = one
// block of 32 weights in each of 2 weight rows against 2 activation rows (2x2 outputs): the
// 34-byte blocks' halves zipped by 64 bits into 2-row operands, four smmla, the four scale
// products gathered into one vector, one fmla; transcribed as its instruction mix.
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
zip1  v16.2d, v2.2d, v12.2d
zip2  v17.2d, v2.2d, v12.2d
zip1  v18.2d, v3.2d, v15.2d
zip2  v19.2d, v3.2d, v15.2d
zip1  v20.2d, v4.2d, v13.2d
zip2  v21.2d, v4.2d, v13.2d
zip1  v22.2d, v5.2d, v14.2d
zip2  v23.2d, v5.2d, v14.2d
fcvt  s0, h0
fcvt  s1, h1
fcvt  s10, h10
fcvt  s11, h11
fmul  s24, s0, s10
fmul  s25, s0, s11
fmul  s26, s1, s10
fmul  s27, s1, s11
ins   v24.s[1], v25.s[0]
ins   v24.s[2], v26.s[0]
ins   v24.s[3], v27.s[0]
movi  v6.2d, #0
smmla v6.4s, v16.16b, v20.16b
smmla v6.4s, v17.16b, v21.16b
smmla v6.4s, v18.16b, v22.16b
smmla v6.4s, v19.16b, v23.16b
scvtf v6.4s, v6.4s
fmla  v7.4s, v6.4s, v24.4s
add   x0, x0, #34
add   x1, x1, #34
add   x2, x2, #34
add   x3, x3, #34
