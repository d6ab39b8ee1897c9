// IREE 3.13's int8 x int8 -> int32 mmt4d inner loop (8x8 tile, K step 4) as compiled into a
// raspberry-pi-5 int8 bundle's prompt matmul (cortex-a76, dotprod): one iteration = 32 weights
// (8 columns x 4) against 8 activation rows, 16 sdot.
	add	x6, x5, x3
	ldp	q24, q25, [x6]
	add	x6, x17, x3
	ldp	q26, q27, [x6]
	sdot	v23.4s, v24.16b, v26.4b[0]
	sdot	v22.4s, v25.16b, v26.4b[0]
	sdot	v21.4s, v24.16b, v26.4b[1]
	sdot	v20.4s, v25.16b, v26.4b[1]
	sdot	v19.4s, v24.16b, v26.4b[2]
	sdot	v18.4s, v25.16b, v26.4b[2]
	sdot	v17.4s, v24.16b, v26.4b[3]
	sdot	v16.4s, v25.16b, v26.4b[3]
	sdot	v7.4s, v24.16b, v27.4b[0]
	sdot	v6.4s, v25.16b, v27.4b[0]
	sdot	v5.4s, v24.16b, v27.4b[1]
	sdot	v4.4s, v25.16b, v27.4b[1]
	sdot	v3.4s, v24.16b, v27.4b[2]
	sdot	v2.4s, v25.16b, v27.4b[2]
	sdot	v1.4s, v24.16b, v27.4b[3]
	sdot	v0.4s, v25.16b, v27.4b[3]
	add	x3, x3, #32
	cmp	x3, #512
	b.ne	.LBB11_4
