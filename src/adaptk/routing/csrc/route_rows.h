/* adaptk: the row helpers both C routers share (route_topk.c, route_native.c): a row's top K,
 * its outputs under the thresholds, and its counts in the patch's statistics. Internal: each
 * router includes it, and each compiles its own copy of these static functions.
 */
#ifndef ADAPTK_ROUTE_ROWS_H
#define ADAPTK_ROUTE_ROWS_H

#include <stdint.h>

#include "counters.h" /* where each counter of the patch's statistics lies */

#define MAXK 64

/* The `keep` largest of p[0..N), best first, into val/idx (strictly greater moves up: of equal
 * values the lower index stays first). Returns 0, or 2 if a value is NaN. */
static inline int row_top(const float *p, int64_t N, int64_t keep, float *val, int64_t *idx) {
    int64_t filled = 0;
    for (int64_t i = 0; i < N; i++) {
        float v = p[i];
        if (v != v)
            return 2;
        if (filled == keep && !(v > val[keep - 1]))
            continue;
        int64_t j = filled < keep ? filled++ : keep - 1;
        while (j > 0 && v > val[j - 1]) { /* insertion */
            val[j] = val[j - 1];
            idx[j] = idx[j - 1];
            j--;
        }
        val[j] = v;
        idx[j] = i;
    }
    return 0;
}

/* One row's outputs from its top K (val, idx) and entropy h, each pointer at the row's K slots:
 * see adaptk_route_topk. */
static inline void row_out(int64_t N, int64_t K, const float *val, const int64_t *idx, float h, const float *tau,
                           int renorm, int64_t *cand, int64_t *indices, uint8_t *drop, float *top, float *weights) {
    float sum = 0.0f;
    for (int64_t r = 0; r < K; r++) {
        int d = h < tau[r];
        cand[r] = idx[r];
        indices[r] = d ? N : idx[r];
        drop[r] = (uint8_t)d;
        if (top) /* NULL from the native router */
            top[r] = val[r];
        weights[r] = d ? 0.0f : val[r];
        sum += weights[r];
    }
    if (renorm)
        for (int64_t r = 0; r < K; r++)
            weights[r] /= sum;
}

/* Adds one routed token to the counters of the patch's statistics (adaptk.routing.stats.LayerStats), as
 * it folds a call: counts int64 and moments float64, laid out as counters.h declares (tokens by
 * kept k, slots by expert or dropped; the sums of the entropies and of their squares).
 * cand and drop are the token's K slots, h its entropy. */
static inline void count_row(int64_t N, int64_t K, const int64_t *cand, const uint8_t *drop, float h, int64_t *counts,
                             int64_t kmax, double *moments) {
    int64_t kept = 0;
    for (int64_t r = 0; r < K; r++) {
        kept += !drop[r];
        counts[drop[r] ? ADAPTK_DROPPED_AT(kmax, N) : ADAPTK_EXPERT_AT(kmax, N, cand[r])]++;
    }
    counts[ADAPTK_KHIST_AT(kmax, N, kept)]++;
    moments[ADAPTK_MOMENT_SUM] += (double)h;
    moments[ADAPTK_MOMENT_SUMSQ] += (double)h * (double)h;
}

#endif
