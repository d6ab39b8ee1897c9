// The int4 prompt kernel's weight strips, written once for every x86 set: a strip is STRIP
// weight rows (8 for AVX2, 16 for AVX-512), one row per 32-bit lane of a `strip_vector`; per
// block of 32 weights, 8 vectors: the low nibbles of bytes 0..3 of every row, their high nibbles,
// then bytes 4..7, ... The including set defines STRIP, `strip_vector`, SV(op) (its intrinsics'
// prefix: SV(unpacklo_epi32) is _mm256_unpacklo_epi32 or _mm512_unpacklo_epi32), SV_AND and
// sv_load_rows (the 16 bytes of rows r, r + 4, ... at `at`, one row per 128-bit lane): all that
// differs between sets.

// Weight rows n0..n0+STRIP (zeros from n on), elements k0..k0+kc of each -> strip
// [kc / BLOCK][8] vectors, and their group scales as f32 [kc / group][STRIP].
static void pack_strip(const int8_t *q, const uint16_t *s, size_t n, size_t n0, size_t k, size_t group, size_t k0,
                       size_t kc, strip_vector *strip, float *scales) {
  const int8_t *rows[STRIP], zeros[16] = {0};
  const strip_vector mask = SV(set1_epi8)(0x0F);
  strip_rows(q, n, n0, k, k0, STRIP, rows);
  for (size_t c = 0; c < kc / BLOCK; ++c) {
    strip_vector a[4];
    for (int r = 0; r < 4; ++r) a[r] = sv_load_rows(rows, r, c * 16, zeros);
    const strip_vector t0 = SV(unpacklo_epi32)(a[0], a[1]), t1 = SV(unpackhi_epi32)(a[0], a[1]);
    const strip_vector t2 = SV(unpacklo_epi32)(a[2], a[3]), t3 = SV(unpackhi_epi32)(a[2], a[3]);
    // v[p] = bytes 4p..4p+3 of rows 0..3 | 4..7 | ...: lane r is row r
    const strip_vector v[4] = {SV(unpacklo_epi64)(t0, t2), SV(unpackhi_epi64)(t0, t2), SV(unpacklo_epi64)(t1, t3), SV(unpackhi_epi64)(t1, t3)};
    for (int p = 0; p < 4; ++p) {
      strip[c * 8 + 2 * p] = SV_AND(v[p], mask);
      strip[c * 8 + 2 * p + 1] = SV_AND(SV(srli_epi16)(v[p], 4), mask);
    }
  }
  strip_scales(s, n, n0, k, group, k0, kc, STRIP, scales);
}
