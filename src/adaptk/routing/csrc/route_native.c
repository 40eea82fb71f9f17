/* adaptk: the native router, the whole router call of a softmax top-k router in one C call
 * (adaptk/routing/fused.py's NativeRouter): the router's linear layer, softmax and entropy, then
 * the routing step of route_topk.c (the same row helpers) and the patch's statistics. Its own
 * summation order and libm's expf/logf: the logits agree with torch's to float32 rounding
 * (bfloat16 logits to one unit in the last place), not bit for bit, and ties keep the lower
 * expert index first.
 *
 * Shapes: T tokens, H hidden size, N experts, K kept at most (K <= N).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "route_rows.h" /* row_top, row_out, count_row; counters.h */

#define MAXN 4096 /* experts per row the native router takes (a stack row of probabilities) */

#define TB 4 /* tokens x experts per register block of the router's matvec: 16 accumulators */
#define EB 4

typedef float v16f __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));

static inline v16f load16(const void *p, int64_t i, int bf16) { /* 16 values from element i, unaligned */
    v16f v;
    if (bf16) {
        v16h h;
        memcpy(&h, (const uint16_t *)p + i, sizeof h);
        v16u u = __builtin_convertvector(h, v16u) << 16;
        memcpy(&v, &u, sizeof v);
    } else {
        memcpy(&v, (const float *)p + i, sizeof v);
    }
    return v;
}

static inline float load1(const void *p, int64_t i, int bf16) {
    if (bf16) {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    return ((const float *)p)[i];
}

static inline uint16_t to_bf16(float f) { /* round to nearest even, as torch (NaN stays a quiet NaN) */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* out [TB, N] = hidden rows t0.. (TB of them, the last repeated past T) . weight [N, H]^T: each
 * dot product a float32 sum in 16 lanes, then the lanes in order, then the tail of H; the same
 * arithmetic for a token whatever T or its place in a block. bf16 is a constant in each inlined
 * copy. */
static inline __attribute__((always_inline)) void block_logits(const void *hidden, const void *weight, int64_t t0,
                                                               int64_t T, int64_t H, int64_t N, int bf16,
                                                               float *out) {
    int64_t rows[TB];
    for (int b = 0; b < TB; b++)
        rows[b] = (t0 + b < T ? t0 + b : T - 1) * H;
    const int64_t body = H - H % 16;
    for (int64_t e0 = 0; e0 < N; e0 += EB) {
        int64_t cols[EB];
        for (int c = 0; c < EB; c++)
            cols[c] = (e0 + c < N ? e0 + c : N - 1) * H;
        v16f acc[TB][EB];
        for (int b = 0; b < TB; b++)
            for (int c = 0; c < EB; c++)
                acc[b][c] = (v16f){0};
        for (int64_t j = 0; j < body; j += 16) {
            v16f x[TB], w[EB];
            for (int b = 0; b < TB; b++)
                x[b] = load16(hidden, rows[b] + j, bf16);
            for (int c = 0; c < EB; c++)
                w[c] = load16(weight, cols[c] + j, bf16);
            for (int b = 0; b < TB; b++)
                for (int c = 0; c < EB; c++)
                    acc[b][c] += x[b] * w[c];
        }
        for (int b = 0; b < TB; b++)
            for (int c = 0; c < EB && e0 + c < N; c++) {
                float s = 0.0f;
                for (int l = 0; l < 16; l++)
                    s += acc[b][c][l];
                for (int64_t j = body; j < H; j++)
                    s += load1(hidden, rows[b] + j, bf16) * load1(weight, cols[c] + j, bf16);
                out[b * N + e0 + c] = s;
            }
    }
}

/* Logits of the TB tokens from t0 into logits [T, N] (rounded to bfloat16 if bf16); returns 0,
 * or 1 if one is NaN or Inf. */
static int block_out(const void *hidden, const void *weight, int64_t t0, int64_t T, int64_t H, int64_t N, int bf16,
                     void *logits) {
    float l[TB * MAXN];
    if (bf16)
        block_logits(hidden, weight, t0, T, H, N, 1, l);
    else
        block_logits(hidden, weight, t0, T, H, N, 0, l);
    for (int64_t t = t0; t < T && t < t0 + TB; t++)
        for (int64_t e = 0; e < N; e++) {
            float v = l[(t - t0) * N + e];
            if (bf16) { /* the logits the model sees are bfloat16 */
                uint16_t r = to_bf16(v);
                ((uint16_t *)logits)[t * N + e] = r;
                v = load1(&r, 0, 1);
            } else {
                ((float *)logits)[t * N + e] = v;
            }
            if (!isfinite(v))
                return 1;
        }
    return 0;
}

/* The softmax of row t of logits [T, N] (finite) into p [N]; returns its entropy (nats). */
static float row_softmax(const void *logits, int64_t t, int64_t N, int bf16, float *p) {
    float m = -INFINITY;
    for (int64_t e = 0; e < N; e++) {
        p[e] = load1(logits, t * N + e, bf16); /* softmax over the logits the model sees */
        m = p[e] > m ? p[e] : m;
    }
    float sum = 0.0f, h = 0.0f;
    for (int64_t e = 0; e < N; e++) {
        p[e] = expf(p[e] - m);
        sum += p[e];
    }
    for (int64_t e = 0; e < N; e++) {
        p[e] /= sum;
        if (p[e] > 0.0f)
            h -= p[e] * logf(p[e]);
    }
    return h;
}

/* hidden [T, H] and weight [N, H], both float32 (bf16 = 0) or both bfloat16 (bf16 = 1); tau [K].
 * Writes logits [T, N] in the input dtype and indices [T, K] and weights [T, K] as
 * adaptk_route_topk does (renorm for any K; weights float32, or bfloat16 rounded to nearest even
 * if wbf16). entropy [T] (nats, of the softmax of the logits), cand [T, K] and drop [T, K] too,
 * unless they are NULL. If counts is not NULL, adds this call's tokens to the counters of the
 * patch's statistics (count_row). One thread: the caller keeps it for few tokens (a decode
 * step), where torch's ops cost more in dispatch than in arithmetic. Returns 0; 1 if a logit is
 * NaN or Inf (then no counter has changed, and the caller runs the torch ops, which raise or
 * count it); 2 if the shape is not one it takes (K > 64, N > 4096). */
int adaptk_route_native(const void *hidden, const void *weight, int64_t T, int64_t H, int64_t N, int64_t K,
                        int bf16, const float *tau, int renorm, void *logits, int64_t *indices, void *weights,
                        int wbf16, float *entropy, int64_t *cand, uint8_t *drop, int64_t *counts, int64_t kmax,
                        double *moments) {
    if (K < 1 || K > N || K > MAXK || N > MAXN || T < 1 || (counts && kmax < K))
        return 2;
    for (int64_t t0 = 0; t0 < T; t0 += TB) /* every logit first: a NaN/Inf changes nothing else */
        if (block_out(hidden, weight, t0, T, H, N, bf16, logits))
            return 1;
    for (int64_t t = 0; t < T; t++) {
        float p[MAXN], val[MAXK], w[MAXK];
        int64_t idx[MAXK], c_row[MAXK];
        uint8_t d_row[MAXK];
        const int64_t o = t * K;
        int64_t *c = cand ? cand + o : c_row; /* the caller's row, or this one's */
        uint8_t *d = drop ? drop + o : d_row;
        const float h = row_softmax(logits, t, N, bf16, p);
        row_top(p, N, K, val, idx);
        row_out(N, K, val, idx, h, tau, renorm, c, indices + o, d, NULL, w);
        for (int64_t r = 0; r < K; r++)
            if (wbf16)
                ((uint16_t *)weights)[o + r] = to_bf16(w[r]);
            else
                ((float *)weights)[o + r] = w[r];
        if (entropy)
            entropy[t] = h;
        if (counts)
            count_row(N, K, c, d, h, counts, kmax, moments);
    }
    return 0;
}
