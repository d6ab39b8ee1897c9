// Which 512-bit operations take vpdpbusd's issue slots on this x86 CPU (AVX-512 VNNI): the
// ceiling of our int4 / int8 prompt kernels, whose blocks mix dot products with conversions,
// scale products and FMAs. Each line times 12 independent vpdpbusd (12 accumulators, latency
// hidden) plus a few other operations, in cycles per iteration; the clock is measured first
// from a chain of dependent adds (one a cycle). Thread CPU time, so a busy second core does
// not count.
//
//     gcc -O2 -mavx512f -mavx512vnni tools/issue_rates.c -o /tmp/issue_rates && /tmp/issue_rates
//
// On a Zen 4 (2026-12-06): 12.0 cycles for the dot products alone, 15.0 with 3 FMAs or 3
// multiplies, 12.0 with 3 conversions or 6 broadcasts from memory: FMAs and multiplies share
// vpdpbusd's slots, conversions and broadcasts do not.
#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int memory[64] __attribute__((aligned(64)));

#define DOT(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define DOTS DOT(0) DOT(1) DOT(2) DOT(3) DOT(4) DOT(5) DOT(6) DOT(7) DOT(8) DOT(9) DOT(10) DOT(11)
#define THREE(op) op " %%zmm30, %%zmm31, %%zmm12\n\t" op " %%zmm30, %%zmm31, %%zmm13\n\t" op " %%zmm30, %%zmm31, %%zmm14\n\t"
#define CVT(i) "vcvtdq2ps %%zmm30, %%zmm" #i "\n\t"
#define BCAST(i) "vpbroadcastd 4(%0), %%zmm" #i "\n\t"
#define CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
                 "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17"
#define TIME(label, body)                                                                        \
  {                                                                                              \
    const double t0 = now();                                                                     \
    for (long n = 0; n < N; ++n) __asm__ volatile(body ::"r"(memory) : CLOBBERS);               \
    printf("| %s | %.1f |\n", label, (now() - t0) / N * ghz * 1e9);                              \
  }

int main(void) {
  const long N = 20000000, M = 500000000;
  long x = 0;
  const double t0 = now();
  for (long i = 0; i < M; ++i) __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
  const double ghz = 4.0 * M / (now() - t0) / 1e9;
  __asm__ volatile("vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31" ::: "xmm30", "xmm31");
  printf("clock %.2f GHz (dependent adds)\n\n| 12 independent vpdpbusd zmm and | cycles |\n|---|---|\n", ghz);
  TIME("nothing else", DOTS)
  TIME("3 vfmadd231ps", DOTS THREE("vfmadd231ps"))
  TIME("3 vmulps", DOTS THREE("vmulps"))
  TIME("3 vcvtdq2ps", DOTS CVT(12) CVT(13) CVT(14))
  TIME("6 vpbroadcastd from memory", DOTS BCAST(12) BCAST(13) BCAST(14) BCAST(15) BCAST(16) BCAST(17))
  return 0;
}
