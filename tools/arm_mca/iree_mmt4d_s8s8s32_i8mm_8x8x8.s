// IREE 3.13's int8 x int8 -> int32 mmt4d inner loop (8x8 tile, K step 8) as compiled into a
// snapdragon-8-gen3 int8 bundle's prompt matmul (generic v9.2-A + i8mm): one iteration = 64
// weights (8 columns x 8) against 8 activation rows, 16 smmla.
	add	x7, x0, x6
	ldp	q24, q25, [x5, #-32]
	ldp	q26, q29, [x7, #-48]
	add	x6, x6, #64
	ldp	q27, q28, [x5], #64
	ldp	q30, q31, [x7, #-16]
	cmp	x6, #560
	smmla	v23.4s, v26.16b, v24.16b
	smmla	v22.4s, v26.16b, v25.16b
	smmla	v19.4s, v29.16b, v24.16b
	smmla	v21.4s, v26.16b, v27.16b
	smmla	v20.4s, v26.16b, v28.16b
	smmla	v18.4s, v29.16b, v25.16b
	smmla	v17.4s, v29.16b, v27.16b
	smmla	v16.4s, v29.16b, v28.16b
	smmla	v7.4s, v30.16b, v24.16b
	smmla	v6.4s, v30.16b, v25.16b
	smmla	v5.4s, v30.16b, v27.16b
	smmla	v4.4s, v30.16b, v28.16b
	smmla	v3.4s, v31.16b, v24.16b
	smmla	v2.4s, v31.16b, v25.16b
	smmla	v1.4s, v31.16b, v27.16b
	smmla	v0.4s, v31.16b, v28.16b
	b.ne	.LBB11_4
