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
 *
 * bfloat16 weights stay bfloat16 in the panels (half the bytes to stream). With AVX512-BF16 the
 * panels hold k in pairs and the rows are bfloat16 too: vdpbf16ps multiplies a pair of k per
 * instruction into float32 sums. Without it the weights are widened to float32 exactly as they
 * are loaded and the rows are float32.
 */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512BF16__)
#include <immintrin.h>
#define BF16_DOT 1  /* bfloat16 weights and rows: vdpbf16ps on k pairs */
#else
#define BF16_DOT 0  /* bfloat16 weights widened to float32 as loaded, float32 rows */
#endif

#define NR 32
#define PREFETCH 16  /* panel rows (k steps) ahead */
/* software prefetch of the panel in the first row block only, and only from this many rows in
 * it (so never where MR = 4): below that the hardware prefetcher alone does as well */
#define PREFETCH_ROWS 11
#if defined(__AVX512F__)
#define MR 12
#else
#define MR 4
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef uint16_t v16h __attribute__((vector_size(32)));  /* 16 bfloat16 */
typedef uint32_t v16w __attribute__((vector_size(64)));

int adaptk_panel_width(void) { return NR; }
int adaptk_row_block(void) { return MR; }
int adaptk_bf16_pairs(void) { return BF16_DOT; }

/* W[n, k] at W + n * sn + k * sk (in elements), N outputs, K inputs -> P, 64-byte aligned,
 * columns past N zero. float32 (adaptk_pack): ceil(N / NR) * K * NR elements, P[p][k][j].
 * bfloat16 bits (adaptk_pack_bf16), kept as they are: with BF16_DOT in k pairs, P[p][k / 2][j][k % 2]
 * over K rounded up to even (the odd k past K zero), ceil(N / NR) * 2 * ceil(K / 2) * NR
 * elements; otherwise as float32 (the kernel widens them exactly as it loads them). */
#define PACK(name, T, pairs) \
    void name(const T *W, int64_t sn, int64_t sk, int64_t N, int64_t K, T *P) { \
        int64_t panels = (N + NR - 1) / NR, kp = pairs ? K + (K & 1) : K; \
        for (int64_t p = 0; p < panels; p++) \
            for (int64_t k = 0; k < kp; k++) { \
                T *dst = P + p * kp * NR + (pairs ? (k / 2) * 2 * NR + k % 2 : k * NR); \
                for (int64_t j = 0; j < NR; j++) { \
                    int64_t n = p * NR + j; \
                    dst[j * (pairs ? 2 : 1)] = n < N && k < K ? W[n * sn + k * sk] : 0; \
                } \
            } \
    }
PACK(adaptk_pack, float, 0)
PACK(adaptk_pack_bf16, uint16_t, BF16_DOT)

/* row k of a panel as two float32 vectors: loaded, or (bf16) widened exactly from bfloat16 */
static inline __attribute__((always_inline)) void load_row(const void *panel, int64_t k, int bf16, v16 *w0, v16 *w1) {
    if (bf16) {
        const uint16_t *h = (const uint16_t *)panel + k * NR;
        *w0 = (v16)(__builtin_convertvector(*(const v16h *)h, v16w) << 16);
        *w1 = (v16)(__builtin_convertvector(*(const v16h *)(h + 16), v16w) << 16);
    } else {
        const float *w = (const float *)panel + k * NR;
        *w0 = *(const v16 *)w;
        *w1 = *(const v16 *)(w + 16);
    }
}

/* rows [0, mr) of x (row stride ldx) times one panel (+ its bias b, NULL for none) -> y (row
 * stride ldy), ncols <= NR columns; the bias is added to the finished sum, as mm then add_ */
static inline __attribute__((always_inline)) void block(const void *xv, int64_t ldx, int64_t K, const void *panel,
                         const float *b, float *y, int64_t ldy, int64_t ncols, int mr, int pf, int bf16) {
    const char *bytes = (const char *)panel;
    const int64_t row_bytes = NR * (bf16 ? 2 : 4);
    v16 lo[MR], hi[MR];
    for (int r = 0; r < MR; r++) {
        lo[r] = (v16){0};
        hi[r] = (v16){0};
    }
#if BF16_DOT
    if (bf16) {  /* rows are bfloat16 too, K is even: one vdpbf16ps per row and 16 columns per k pair */
        const uint16_t *xh = (const uint16_t *)xv;
        for (int64_t k2 = 0; k2 < K / 2; k2++) {
            const uint16_t *w = (const uint16_t *)panel + k2 * 2 * NR;
            if (pf) {
                __builtin_prefetch(w + PREFETCH * 2 * NR);
                __builtin_prefetch(w + PREFETCH * 2 * NR + 32);
            }
            __m512bh w0 = (__m512bh)_mm512_load_si512(w), w1 = (__m512bh)_mm512_load_si512(w + 32);
            for (int r = 0; r < MR; r++) {
                if (r < mr) {
                    int32_t pair;
                    memcpy(&pair, xh + r * ldx + 2 * k2, sizeof pair);
                    __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
                    lo[r] = _mm512_dpbf16_ps(lo[r], a, w0);
                    hi[r] = _mm512_dpbf16_ps(hi[r], a, w1);
                }
            }
        }
    } else
#endif
    for (int64_t k = 0; k < K; k++) {
        const float *x = (const float *)xv;
        if (pf) {  /* pf, mr and bf16 are compile-time constants in each specialisation */
            __builtin_prefetch(bytes + (k + PREFETCH) * row_bytes);
            if (!bf16)
                __builtin_prefetch(bytes + (k + PREFETCH) * row_bytes + 64);
        }
        v16 w0, w1;
        load_row(panel, k, bf16, &w0, &w1);
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

#define BLOCK_AS(n, name, pf, bf16) \
    static void name##n(const void *x, int64_t ldx, int64_t K, const void *panel, const float *b, float *y, \
                        int64_t ldy, int64_t ncols) { block(x, ldx, K, panel, b, y, ldy, ncols, n, pf, bf16); }
#define BLOCK(n) BLOCK_AS(n, block, 0, 0) BLOCK_AS(n, pblock, 1, 0) BLOCK_AS(n, hblock, 0, 1) \
    BLOCK_AS(n, phblock, 1, 1)
BLOCK(1) BLOCK(2) BLOCK(3) BLOCK(4)
#if MR > 4
BLOCK(5) BLOCK(6) BLOCK(7) BLOCK(8) BLOCK(9) BLOCK(10) BLOCK(11) BLOCK(12)
#endif

typedef void (*block_fn)(const void *, int64_t, int64_t, const void *, const float *, float *, int64_t, int64_t);
#if MR > 4
#define ROW(name) {0, name##1, name##2, name##3, name##4, name##5, name##6, name##7, name##8, name##9, name##10, \
                   name##11, name##12}
#else
#define ROW(name) {0, name##1, name##2, name##3, name##4}
#endif
static const block_fn BLOCKS[2][2][MR + 1] = {{ROW(block), ROW(pblock)}, {ROW(hblock), ROW(phblock)}};  /* [bf16][pf] */

/* Groups g = 0..G-1 (consecutive experts): rows [starts[g], starts[g + 1]) - starts[0] of
 * x[rows, K] (row stride ldx, in elements) times the weights packed by adaptk_pack, or by
 * adaptk_pack_bf16 if bf16, at address panels[g] (+ bias + g * ldb, float32, if bias is not
 * NULL) -> the same rows of y[rows, N] (float32, row stride ldy). x is float32, except for
 * bfloat16 weights with BF16_DOT: then bfloat16, with K rounded up to even (a zero column).
 * One call for all of a layer's experts: no per-expert call overhead. The column panels are
 * shared out among `threads` OpenMP threads, each taking the same range of panels of every group
 * (balanced whatever the rows per group). A thread goes through its groups in turn: it streams
 * one group's panels (contiguous) before the next group's, the group's rows staying in the near
 * caches. Each output is one thread's sequential sum, whatever the thread count. */
void adaptk_grouped_gemm(const void *x, int64_t ldx, const int64_t *starts, int64_t G, const int64_t *panels,
                         const float *bias, int64_t ldb, int64_t K, int64_t N, float *y, int64_t ldy,
                         int bf16, int threads) {
    bf16 = bf16 != 0;
    const int pairs = bf16 && BF16_DOT;
    const int64_t kp = pairs ? K + (K & 1) : K, xsize = pairs ? 2 : 4, wsize = bf16 ? 2 : 4;
    const int64_t np = (N + NR - 1) / NR;
    if (threads > np)
        threads = (int)(np > 0 ? np : 1);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#ifdef _OPENMP
        const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int64_t id = 0, nt = 1;
#endif
        const int64_t p0 = np * id / nt, p1 = np * (id + 1) / nt;  /* this thread's panels */
        for (int64_t g = 0; g < G; g++)
            for (int64_t p = p0; p < p1; p++) {
                const int64_t row0 = starts[g] - starts[0], m = starts[g + 1] - starts[g];
                const int64_t blocks = (m + MR - 1) / MR;
                const int64_t ncols = N - p * NR < NR ? N - p * NR : NR;
                const char *panel = (const char *)(intptr_t)panels[g] + p * kp * NR * wsize;
                const float *b = bias ? bias + g * ldb + p * NR : 0;
                for (int64_t i = 0, r = 0; i < blocks; i++) {
                    int mr = (int)(m / blocks + (i < m % blocks));  /* balanced: 16 rows are 8 + 8, not 12 + 4 */
                    int pf = i == 0 && mr >= PREFETCH_ROWS;  /* see PREFETCH_ROWS */
                    BLOCKS[bf16][pf][mr]((const char *)x + (row0 + r) * ldx * xsize, ldx, kp, panel, b,
                                         y + (row0 + r) * ldy + p * NR, ldy, ncols);
                    r += mr;
                }
            }
    }
}
