/* adaptk: y[m, N] = x[m, K] @ W^T for the few rows a MoE layer hands each expert (float32),
 * all of a layer's experts in one call.
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
#define PREFETCH 16  /* panel rows (k steps) ahead */
/* software prefetch of the panel in the first row block only, and only from this many rows in
 * it: with 11-12 rows it was 7-13 % faster; with 1-10 it gained nothing, or the hardware
 * prefetcher alone was up to 15 % faster (64 experts 1024 -> 1024 and 512 -> 1024, one thread,
 * on the CPU of docs/performance.md) */
#define PREFETCH_ROWS 11  /* (so never where MR = 4) */
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

/* rows [0, mr) of x (row stride ldx) times one panel (+ its bias b, NULL for none) -> y (row
 * stride ldy), ncols <= NR columns; the bias is added to the finished sum, as mm then add_ */
static inline __attribute__((always_inline)) void block(const float *x, int64_t ldx, int64_t K, const float *panel,
                         const float *b, float *y, int64_t ldy, int64_t ncols, int mr, int pf) {
    v16 lo[MR], hi[MR];
    for (int r = 0; r < MR; r++) {
        lo[r] = (v16){0};
        hi[r] = (v16){0};
    }
    for (int64_t k = 0; k < K; k++) {
        const float *w = panel + k * NR;
        if (pf) {  /* compile-time constant in each specialisation */
            __builtin_prefetch(w + PREFETCH * NR);
            __builtin_prefetch(w + PREFETCH * NR + 16);
        }
        v16 w0 = *(const v16 *)w, w1 = *(const v16 *)(w + 16);
        for (int r = 0; r < MR; r++) {
            if (r < mr) {  /* mr is a compile-time constant in each specialisation below */
                float a = x[r * ldx + k];
                lo[r] += a * w0;
                hi[r] += a * w1;
            }
        }
    }
    float bias[NR] __attribute__((aligned(64))) = {0};
    if (b)
        memcpy(bias, b, (size_t)ncols * sizeof(float));
    for (int r = 0; r < mr; r++) {
        v16 o0 = lo[r], o1 = hi[r];
        if (b) {
            o0 += *(const v16 *)bias;
            o1 += *(const v16 *)(bias + 16);
        }
        if (ncols == NR) {
            *(v16u *)(y + r * ldy) = o0;
            *(v16u *)(y + r * ldy + 16) = o1;
        } else {
            float tmp[NR] __attribute__((aligned(64)));
            *(v16 *)tmp = o0;
            *(v16 *)(tmp + 16) = o1;
            memcpy(y + r * ldy, tmp, (size_t)ncols * sizeof(float));
        }
    }
}

#define BLOCK(n) \
    static void block##n(const float *x, int64_t ldx, int64_t K, const float *panel, const float *b, float *y, \
                         int64_t ldy, int64_t ncols) { block(x, ldx, K, panel, b, y, ldy, ncols, n, 0); } \
    static void pblock##n(const float *x, int64_t ldx, int64_t K, const float *panel, const float *b, float *y, \
                          int64_t ldy, int64_t ncols) { block(x, ldx, K, panel, b, y, ldy, ncols, n, 1); }
BLOCK(1) BLOCK(2) BLOCK(3) BLOCK(4)
#if MR > 4
BLOCK(5) BLOCK(6) BLOCK(7) BLOCK(8) BLOCK(9) BLOCK(10) BLOCK(11) BLOCK(12)
#endif

typedef void (*block_fn)(const float *, int64_t, int64_t, const float *, const float *, float *, int64_t, int64_t);
static const block_fn BLOCKS[2][MR + 1] = {
    {0, block1, block2, block3, block4,
#if MR > 4
     block5, block6, block7, block8, block9, block10, block11, block12,
#endif
    },
    {0, pblock1, pblock2, pblock3, pblock4,
#if MR > 4
     pblock5, pblock6, pblock7, pblock8, pblock9, pblock10, pblock11, pblock12,
#endif
    }};

/* Groups g = 0..G-1 (consecutive experts): rows [starts[g], starts[g + 1]) - starts[0] of
 * x[rows, K] (row stride ldx) times the weights packed by adaptk_pack at address panels[g]
 * (+ bias + g * ldb, if bias is not NULL) -> the same rows of y[rows, N] (row stride ldy).
 * One call for all of a layer's experts: no per-expert call overhead. The work is shared out
 * panel-major (each thread takes a range of column panels of every group) among `threads`
 * OpenMP threads; each output is one thread's sequential sum, whatever the thread count. */
void adaptk_grouped_gemm(const float *x, int64_t ldx, const int64_t *starts, int64_t G, const int64_t *panels,
                         const float *bias, int64_t ldb, int64_t K, int64_t N, float *y, int64_t ldy,
                         int threads) {
    int64_t np = (N + NR - 1) / NR, tasks = np * G;
    if (threads > tasks)
        threads = (int)(tasks > 0 ? tasks : 1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t p = t / G, g = t % G;
        int64_t row0 = starts[g] - starts[0], m = starts[g + 1] - starts[g];
        int64_t ncols = N - p * NR < NR ? N - p * NR : NR;
        const float *panel = (const float *)(intptr_t)panels[g] + p * K * NR;
        const float *b = bias ? bias + g * ldb + p * NR : 0;
        int64_t blocks = (m + MR - 1) / MR;
        for (int64_t i = 0, r = 0; i < blocks; i++) {
            int mr = (int)(m / blocks + (i < m % blocks));  /* balanced: 16 rows are 8 + 8, not 12 + 4 */
            int pf = i == 0 && mr >= PREFETCH_ROWS;  /* see PREFETCH_ROWS */
            BLOCKS[pf][mr](x + (row0 + r) * ldx, ldx, K, panel, b, y + (row0 + r) * ldy + p * NR, ldy, ncols);
            r += mr;
        }
    }
}
