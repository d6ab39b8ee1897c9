// Loading an AMX tile configuration (palette 1, Intel SDM: LDTILECFG), shared by the AMX set's
// kernels, which differ only in the tile shapes they ask for.
#ifndef IREE_GLM_AMX_TILE_CONFIG_H_
#define IREE_GLM_AMX_TILE_CONFIG_H_

#include <immintrin.h>
#include <stdint.h>

// Tiles 0..7: rows[t] rows of colsb[t] bytes each (0 rows: unused).
static inline void load_tile_config(const int rows[8], const int colsb[8]) {
  struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } c __attribute__((aligned(64)));
  _mm512_store_si512((void *)&c, _mm512_setzero_si512());
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = (uint8_t)rows[t];
    c.colsb[t] = (uint16_t)(rows[t] ? colsb[t] : 0);
  }
  _tile_loadconfig(&c);
}

#endif  // IREE_GLM_AMX_TILE_CONFIG_H_
