// The vector operations the AVX2 and AVX-512 forms of the flash-attention kernel spell alike but
// for their prefix: VX is `_mm256_` or `_mm512_` (defined by the including file, which then
// includes ../attention_tile.h; that header undefines these). No include guard: included once
// per vector width.
#define VX_OP_(prefix, op) prefix##op
#define VX_OP(prefix, op) VX_OP_(prefix, op)
#define vf_zero() VX_OP(VX, setzero_ps)()
#define vf_set1(s) VX_OP(VX, set1_ps)(s)
#define vf_load(p) VX_OP(VX, load_ps)(p)
#define vf_store(p, x) VX_OP(VX, store_ps)(p, x)
#define vf_add(a, b) VX_OP(VX, add_ps)(a, b)
#define vf_sub(a, b) VX_OP(VX, sub_ps)(a, b)
#define vf_mul(a, b) VX_OP(VX, mul_ps)(a, b)
#define vf_div(a, b) VX_OP(VX, div_ps)(a, b)
#define vf_max(a, b) VX_OP(VX, max_ps)(a, b)
#define vf_min(a, b) VX_OP(VX, min_ps)(a, b)
#define vf_fma(a, b, c) VX_OP(VX, fmadd_ps)(a, b, c)
