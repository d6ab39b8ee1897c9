// Our aarch64_dotprod int8 matrix-vector kernel's inner loop (iree_glm/kernels/aarch64_dotprod/int8.c,
// aarch64-linux-gnu-gcc 12 -O3 -march=armv8.2-a+dotprod -S): one iteration = one block of 32 k
// of a 16-row tile (16 block-rows): 8 x (64-byte load, 8 zip, 4 sdot), 4 scvtf + 4 fmla.
	sub	x12, x0, #1024
	sub	x13, x0, #960
	sub	x14, x0, #896
	sub	x3, x0, #832
	prfm	PLDL1KEEP, [x0]
	ld1	{v16.16b - v19.16b}, [x12]
	sub	x15, x0, #768
	ld1	{v12.16b - v15.16b}, [x13]
	sub	x16, x0, #704
	ld1	{v8.16b - v11.16b}, [x14]
	sub	x17, x0, #640
	ld1	{v4.16b - v7.16b}, [x3]
	sub	x13, x0, #576
	zip1	v2.16b, v18.16b, v19.16b
	prfm	PLDL1KEEP, [x0, 256]
	zip1	v1.16b, v14.16b, v15.16b
	add	x12, x10, x1, lsl 2
	zip1	v23.16b, v12.16b, v13.16b
	cmp	x9, x1
	zip1	v24.16b, v16.16b, v17.16b
	add	x0, x0, 512
	zip2	v0.16b, v16.16b, v17.16b
	ldr	s30, [x12, -4]
	zip2	v19.16b, v18.16b, v19.16b
	add	x1, x1, 1
	zip1	v29.16b, v8.16b, v9.16b
	add	x2, x2, 32
	zip2	v3.16b, v12.16b, v13.16b
	zip2	v26.16b, v4.16b, v5.16b
	zip2	v12.16b, v8.16b, v9.16b
	stp	q0, q19, [sp, 128]
	zip2	v27.16b, v6.16b, v7.16b
	str	q3, [sp, 160]
	zip1	v0.8h, v24.8h, v2.8h
	zip2	v15.16b, v14.16b, v15.16b
	zip2	v24.8h, v24.8h, v2.8h
	zip2	v8.16b, v10.16b, v11.16b
	zip1	v2.8h, v23.8h, v1.8h
	ld1	{v16.16b - v19.16b}, [x15]
	str	q15, [sp, 176]
	zip1	v28.16b, v6.16b, v7.16b
	str	q12, [sp, 208]
	zip1	v22.16b, v10.16b, v11.16b
	ld1	{v12.16b - v15.16b}, [x16]
	stp	q8, q26, [sp, 224]
	zip1	v21.16b, v4.16b, v5.16b
	ld1	{v8.16b - v11.16b}, [x17]
	str	q27, [sp, 256]
	ld1	{v4.16b - v7.16b}, [x13]
	str	q2, [sp, 192]
	mov	v2.16b, v31.16b
	zip2	v23.8h, v23.8h, v1.8h
	ldr	q1, [x2, -32]
	sdot	v2.4s, v0.16b, v1.4b[0]
	mov	v0.16b, v31.16b
	zip1	v25.16b, v8.16b, v9.16b
	zip1	v27.16b, v18.16b, v19.16b
	zip1	v20.16b, v16.16b, v17.16b
	sdot	v0.4s, v24.16b, v1.4b[0]
	ldr	q24, [sp, 192]
	sdot	v2.4s, v24.16b, v1.4b[1]
	sdot	v0.4s, v23.16b, v1.4b[1]
	zip1	v24.8h, v29.8h, v22.8h
	zip2	v22.8h, v29.8h, v22.8h
	zip1	v3.16b, v12.16b, v13.16b
	zip1	v26.16b, v14.16b, v15.16b
	sdot	v2.4s, v24.16b, v1.4b[2]
	zip1	v29.16b, v4.16b, v5.16b
	sdot	v0.4s, v22.16b, v1.4b[2]
	zip1	v22.8h, v21.8h, v28.8h
	zip2	v21.8h, v21.8h, v28.8h
	zip2	v28.16b, v16.16b, v17.16b
	zip2	v17.16b, v12.16b, v13.16b
	sdot	v2.4s, v22.16b, v1.4b[3]
	zip2	v12.16b, v8.16b, v9.16b
	zip2	v16.16b, v18.16b, v19.16b
	sdot	v0.4s, v21.16b, v1.4b[3]
	zip2	v9.16b, v4.16b, v5.16b
	ldp	q4, q19, [sp, 128]
	mov	v18.16b, v2.16b
	zip2	v2.16b, v14.16b, v15.16b
	ldp	q14, q15, [sp, 160]
	zip1	v24.16b, v6.16b, v7.16b
	zip2	v5.16b, v6.16b, v7.16b
	zip1	v13.8h, v14.8h, v15.8h
	zip1	v7.8h, v3.8h, v26.8h
	zip2	v14.8h, v14.8h, v15.8h
	zip2	v3.8h, v3.8h, v26.8h
	ldp	q22, q26, [sp, 224]
	zip1	v15.8h, v4.8h, v19.8h
	zip2	v21.8h, v4.8h, v19.8h
	ldr	q4, [sp, 208]
	zip1	v6.8h, v20.8h, v27.8h
	zip1	v23.16b, v10.16b, v11.16b
	zip1	v19.8h, v4.8h, v22.8h
	zip2	v20.8h, v20.8h, v27.8h
	ldr	q27, [sp, 256]
	zip2	v22.8h, v4.8h, v22.8h
	mov	v4.16b, v31.16b
	zip2	v8.16b, v10.16b, v11.16b
	zip1	v10.8h, v25.8h, v23.8h
	zip2	v23.8h, v25.8h, v23.8h
	sdot	v4.4s, v15.16b, v1.4b[0]
	zip1	v25.8h, v26.8h, v27.8h
	sdot	v4.4s, v13.16b, v1.4b[1]
	zip2	v15.8h, v26.8h, v27.8h
	mov	v13.16b, v31.16b
	sdot	v4.4s, v19.16b, v1.4b[2]
	zip1	v11.8h, v29.8h, v24.8h
	sdot	v4.4s, v25.16b, v1.4b[3]
	zip1	v26.8h, v28.8h, v16.8h
	zip2	v16.8h, v28.8h, v16.8h
	sdot	v13.4s, v21.16b, v1.4b[0]
	sdot	v13.4s, v14.16b, v1.4b[1]
	sdot	v13.4s, v22.16b, v1.4b[2]
	sdot	v13.4s, v15.16b, v1.4b[3]
	ldr	q1, [x2, -16]
	sdot	v0.4s, v20.16b, v1.4b[0]
	sdot	v0.4s, v3.16b, v1.4b[1]
	sdot	v0.4s, v23.16b, v1.4b[2]
	zip1	v14.8h, v17.8h, v2.8h
	sdot	v18.4s, v6.16b, v1.4b[0]
	zip2	v2.8h, v17.8h, v2.8h
	sdot	v4.4s, v26.16b, v1.4b[0]
	mov	v3.16b, v0.16b
	mov	v6.16b, v18.16b
	mov	v0.16b, v13.16b
	sdot	v4.4s, v14.16b, v1.4b[1]
	zip2	v24.8h, v29.8h, v24.8h
	zip1	v17.8h, v12.8h, v8.8h
	sdot	v6.4s, v7.16b, v1.4b[1]
	sdot	v6.4s, v10.16b, v1.4b[2]
	sdot	v0.4s, v16.16b, v1.4b[0]
	sdot	v6.4s, v11.16b, v1.4b[3]
	sdot	v0.4s, v2.16b, v1.4b[1]
	ldr	q2, [sp, 112]
	sdot	v3.4s, v24.16b, v1.4b[3]
	sdot	v4.4s, v17.16b, v1.4b[2]
	scvtf	v6.4s, v6.4s
	scvtf	v3.4s, v3.4s
	zip2	v8.8h, v12.8h, v8.8h
	zip1	v12.8h, v9.8h, v5.8h
	fmla	v2.4s, v6.4s, v30.s[0]
	zip2	v5.8h, v9.8h, v5.8h
	sdot	v0.4s, v8.16b, v1.4b[2]
	sdot	v4.4s, v12.16b, v1.4b[3]
	str	q2, [sp, 112]
	sdot	v0.4s, v5.16b, v1.4b[3]
	ldr	q2, [sp, 64]
	scvtf	v1.4s, v4.4s
	scvtf	v0.4s, v0.4s
	fmla	v2.4s, v3.4s, v30.s[0]
	str	q2, [sp, 64]
	ldr	q2, [sp, 80]
	fmla	v2.4s, v1.4s, v30.s[0]
	ldr	q1, [sp, 96]
	fmla	v1.4s, v0.4s, v30.s[0]
	stp	q2, q1, [sp, 80]
	bne	.L8
