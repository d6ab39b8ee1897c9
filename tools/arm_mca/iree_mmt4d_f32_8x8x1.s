// IREE 3.13 batch_mmt4d f32 ukernel inner loop (8x8x1 tiles, cortex-a76), from the attention-alone
// module (tools/bench_sparse.py build_attention, H=4, Hkv=2, D=64) compiled with the Pi flags and
// IREE's decomposed attention: both QK^T and PV are this loop. One iteration: one k step of an 8 x 8 tile.
	add	x3, x17, x2
	ldp	q24, q25, [x3]
	add	x3, x14, x2
	ldp	q26, q27, [x3]
	fmla	v23.4s, v24.4s, v26.s[0]
	fmla	v22.4s, v25.4s, v26.s[0]
	fmla	v21.4s, v24.4s, v26.s[1]
	fmla	v20.4s, v25.4s, v26.s[1]
	fmla	v19.4s, v24.4s, v26.s[2]
	fmla	v18.4s, v25.4s, v26.s[2]
	fmla	v17.4s, v24.4s, v26.s[3]
	fmla	v16.4s, v25.4s, v26.s[3]
	fmla	v7.4s, v24.4s, v27.s[0]
	fmla	v6.4s, v25.4s, v27.s[0]
	fmla	v5.4s, v24.4s, v27.s[1]
	fmla	v4.4s, v25.4s, v27.s[1]
	fmla	v3.4s, v24.4s, v27.s[2]
	fmla	v2.4s, v25.4s, v27.s[2]
	fmla	v1.4s, v24.4s, v27.s[3]
	fmla	v0.4s, v25.4s, v27.s[3]
	add	x2, x2, #0x20
	cmp	x2, #0x4, lsl #12
	b.ne	.LBB0_1
