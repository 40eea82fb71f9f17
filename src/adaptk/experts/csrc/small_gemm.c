/* adaptk: y[m, N] = x[m, K] @ W^T for the few rows a MoE layer hands one expert (float32).
 *
 * W ([N, K], any strides) is re-laid out once into column panels of NR = 32 outputs,
 * P[panel][k][32], so that one pass over k streams one contiguous panel. Each panel is
 * multiplied with blocks of up to MR rows held in registers (MR x 32 accumulators), and stays
 * in L2 for the next block of rows. At 1-16 rows the weights are read once, as one stream, with
 * no per-call re-layout: what a general GEMM does not do at these sizes.
 *
 * Written with GCC/Clang vector extensions and compiled on the machine that runs it
 * (-O3 -march=native -fopenmp): AVX-512 gets MR = 12 (24 accumulators in 32 registers), other
 * targets MR = 4. Summation over k is sequential per output, in float32, so the result does not
 * depend on the number of threads (the panels are shared out among them).
 */
#include <stdint.h>
#include <string.h>

#define NR 32
#if defined(__AVX512F__)
#define MR 12
#else
#define MR 4
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

int adaptk_panel_width(void) { return NR; }
int adaptk_row_block(void) { return MR; }

/* W[n, k] at W + n * sn + k * sk (in floats), N outputs, K inputs -> P, ceil(N / NR) * K * NR
 * floats, 64-byte aligned; columns past N are zero. */
void adaptk_pack(const float *W, int64_t sn, int64_t sk, int64_t N, int64_t K, float *P) {
    int64_t panels = (N + NR - 1) / NR;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t k = 0; k < K; k++) {
            float *dst = P + (p * K + k) * NR;
            for (int64_t j = 0; j < NR; j++) {
                int64_t n = p * NR + j;
                dst[j] = n < N ? W[n * sn + k * sk] : 0.0f;
            }
        }
}

/* rows [0, mr) of x (row stride ldx) times one panel -> y (row stride ldy), ncols <= NR columns */
static inline __attribute__((always_inline)) void block(const float *x, int64_t ldx, int64_t K, const float *panel,
                         float *y, int64_t ldy, int64_t ncols, int mr) {
    v16 lo[MR], hi[MR];
    for (int r = 0; r < MR; r++) {
        lo[r] = (v16){0};
        hi[r] = (v16){0};
    }
    for (int64_t k = 0; k < K; k++) {
        const float *b = panel + k * NR;
        __builtin_prefetch(b + 16 * NR);
        __builtin_prefetch(b + 16 * NR + 16);
        v16 b0 = *(const v16 *)b, b1 = *(const v16 *)(b + 16);
        for (int r = 0; r < MR; r++) {
            if (r < mr) {  /* mr is a compile-time constant in each specialisation below */
                float a = x[r * ldx + k];
                lo[r] += a * b0;
                hi[r] += a * b1;
            }
        }
    }
    for (int r = 0; r < mr; r++) {
        if (ncols == NR) {
            *(v16u *)(y + r * ldy) = lo[r];
            *(v16u *)(y + r * ldy + 16) = hi[r];
        } else {
            float tmp[NR] __attribute__((aligned(64)));
            *(v16 *)tmp = lo[r];
            *(v16 *)(tmp + 16) = hi[r];
            memcpy(y + r * ldy, tmp, (size_t)ncols * sizeof(float));
        }
    }
}

#define BLOCK(n) \
    static void block##n(const float *x, int64_t ldx, int64_t K, const float *panel, float *y, \
                         int64_t ldy, int64_t ncols) { block(x, ldx, K, panel, y, ldy, ncols, n); }
BLOCK(1) BLOCK(2) BLOCK(3) BLOCK(4)
#if MR > 4
BLOCK(5) BLOCK(6) BLOCK(7) BLOCK(8) BLOCK(9) BLOCK(10) BLOCK(11) BLOCK(12)
#endif

typedef void (*block_fn)(const float *, int64_t, int64_t, const float *, float *, int64_t, int64_t);
static const block_fn BLOCKS[MR + 1] = {
    0, block1, block2, block3, block4,
#if MR > 4
    block5, block6, block7, block8, block9, block10, block11, block12,
#endif
};

/* y[m, N] (row stride ldy) = x[m, K] (row stride ldx) @ W^T with W packed by adaptk_pack,
 * the column panels shared out among `threads` OpenMP threads */
void adaptk_gemm(const float *x, int64_t ldx, int64_t m, int64_t K, const float *P, int64_t N,
                 float *y, int64_t ldy, int threads) {
    int64_t panels = (N + NR - 1) / NR;
    if (threads > panels)
        threads = (int)panels;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t p = 0; p < panels; p++) {
        int64_t ncols = N - p * NR < NR ? N - p * NR : NR;
        const float *panel = P + p * K * NR;
        for (int64_t r = 0; r < m; r += MR) {
            int mr = (int)(m - r < MR ? m - r : MR);
            BLOCKS[mr](x + r * ldx, ldx, K, panel, y + r * ldy + p * NR, ldy, ncols);
        }
    }
}
