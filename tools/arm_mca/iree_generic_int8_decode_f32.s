// IREE 3.13's generic int8-weight decode matvec (f32 activations; weights widened by tbl + scvtf)
// as compiled into a raspberry-pi-5 int8 bundle (cortex-a76): one iteration = 64 weights
// (16 columns x 4 rows of the [N/16, K, 16] layout) against one activation row.
	ldr	q29, [x13]
	tbl	v28.16b, { v29.16b }, v24.16b
	tbl	v30.16b, { v29.16b }, v25.16b
	scvtf	v31.4s, v28.4s, #24
	ldr	s28, [x12, x8]
	fmla	v16.4s, v31.4s, v28.s[0]
	tbl	v31.16b, { v29.16b }, v26.16b
	tbl	v29.16b, { v29.16b }, v27.16b
	scvtf	v31.4s, v31.4s, #24
	scvtf	v30.4s, v30.4s, #24
	fmla	v7.4s, v30.4s, v28.s[0]
	fmla	v22.4s, v31.4s, v28.s[0]
	ldr	q30, [x13, #1024]
	tbl	v31.16b, { v30.16b }, v27.16b
	scvtf	v29.4s, v29.4s, #24
	fmla	v0.4s, v29.4s, v28.s[0]
	tbl	v29.16b, { v30.16b }, v26.16b
	scvtf	v31.4s, v31.4s, #24
	fmla	v1.4s, v31.4s, v28.s[0]
	ldr	q31, [x13, #2048]
	scvtf	v29.4s, v29.4s, #24
	fmla	v17.4s, v29.4s, v28.s[0]
	tbl	v29.16b, { v30.16b }, v25.16b
	scvtf	v29.4s, v29.4s, #24
	fmla	v3.4s, v29.4s, v28.s[0]
	tbl	v29.16b, { v30.16b }, v24.16b
	scvtf	v29.4s, v29.4s, #24
	fmla	v18.4s, v29.4s, v28.s[0]
	tbl	v29.16b, { v31.16b }, v27.16b
	scvtf	v29.4s, v29.4s, #24
	fmla	v2.4s, v29.4s, v28.s[0]
	tbl	v29.16b, { v31.16b }, v26.16b
	scvtf	v29.4s, v29.4s, #24
	fmla	v19.4s, v29.4s, v28.s[0]
	tbl	v29.16b, { v31.16b }, v25.16b
	scvtf	v29.4s, v29.4s, #24
	fmla	v4.4s, v29.4s, v28.s[0]
	ldr	q29, [x13, #3072]
	tbl	v30.16b, { v31.16b }, v24.16b
	scvtf	v30.4s, v30.4s, #24
	fmla	v5.4s, v30.4s, v28.s[0]
	tbl	v30.16b, { v29.16b }, v27.16b
	scvtf	v30.4s, v30.4s, #24
	fmla	v6.4s, v30.4s, v28.s[0]
	tbl	v30.16b, { v29.16b }, v26.16b
	scvtf	v30.4s, v30.4s, #24
	fmla	v23.4s, v30.4s, v28.s[0]
	tbl	v30.16b, { v29.16b }, v25.16b
	scvtf	v30.4s, v30.4s, #24
	fmla	v20.4s, v30.4s, v28.s[0]
	tbl	v29.16b, { v29.16b }, v24.16b
	scvtf	v29.4s, v29.4s, #24
	fmla	v21.4s, v29.4s, v28.s[0]
	add	x8, x8, #4
