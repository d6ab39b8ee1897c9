// The part llama.cpp's i8mm vec_dot loops (ggml_vec_dot_q8_0_q8_0 and _q4_0_q8_0, nrc == 2)
// share, appended by tools/arm_mca.py to each format's loads: the two weight rows' block halves
// (v2 / v3 row 0, v12 / v15 row 1, int8) and the two activation rows' (v4 / v5, v13 / v14)
// zipped by 64 bits into 2-row operands, the four f16 scales' products gathered into one vector,
// four smmla and one fmla into the 2x2 outputs.
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
