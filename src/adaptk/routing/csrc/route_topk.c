/* adaptk: the routing step of a softmax top-k router under an entropy-threshold policy, in one
 * call (adaptk/routing/fused.py). At one token the torch ops cost more in dispatch than in
 * arithmetic, the more so when the layer before has evicted the caches.
 *
 * adaptk_route_topk (the "fused" step) replaces the top-k, the threshold comparison, the
 * sentinel fill, the kept weights and (for K <= 2) their renormalisation, and the NaN/Inf check
 * of the logits, with one pass over [T, N]. It reproduces torch's results bit for bit: the top K
 * are the K largest probabilities, best first, which is torch.topk(sorted=True)'s answer
 * whenever the K + 1 largest values of a row are distinct. A row where two of them tie (torch's
 * order among ties is its own) is listed for the caller, which runs torch.topk on those rows and
 * hands its answer to adaptk_route_rows; a NaN probability returns 2 and the caller runs the
 * torch ops instead. The entropy is the caller's (torch's). Sums of K <= 2 terms are
 * (0 + a) + b, as torch's sum of a short row. adaptk_count adds the tokens it routed to the patch's statistics
 * (the C++ binding's fused router calls it). The whole native router is route_native.c.
 *
 * Shapes: T tokens, N experts, K kept at most (K <= N).
 */
#include <stddef.h>
#include <stdint.h>

#include "route_rows.h" /* row_top, row_out, count_row; counters.h */

/* dtype codes of the logits: 0 = do not check, 1 = float32, 2 = bfloat16, 3 = float16 */
static int row_finite(const void *logits, int64_t t, int64_t n, int code) {
    if (code == 1) {
        const uint32_t *x = (const uint32_t *)logits + t * n;
        for (int64_t i = 0; i < n; i++)
            if ((x[i] & 0x7f800000u) == 0x7f800000u)
                return 0;
    } else if (code == 2 || code == 3) {
        const uint16_t *x = (const uint16_t *)logits + t * n;
        const uint16_t mask = code == 2 ? 0x7f80u : 0x7c00u;
        for (int64_t i = 0; i < n; i++)
            if ((x[i] & mask) == mask)
                return 0;
    }
    return 1;
}

/* probs [T, N] float32 (rows of a softmax), entropy [T] float32, tau [K] float32 (rank r is
 * dropped iff entropy < tau[r]); logits [T, N] of dtype `code`. Writes cand [T, K] (the top K,
 * best first), indices [T, K] (cand, or N where dropped), drop [T, K] (1 where dropped),
 * top [T, K] (the candidates' probabilities; not written if NULL) and weights [T, K] (top, 0
 * where dropped, divided by their sum if renorm, which needs K <= 2).
 * A row with a tie among its K + 1 largest probabilities is left unwritten and its index goes
 * to tied ([T] room); *ntied says how many (the caller writes those rows with adaptk_route_rows
 * from torch.topk's answer for them).
 * Returns 0; 1 if a logit is NaN or Inf (checked first, for every row); 2 if a row has a NaN
 * probability (outputs then undefined). */
int adaptk_route_topk(const float *probs, int64_t T, int64_t N, int64_t K, const float *entropy,
                      const float *tau, const void *logits, int code, int renorm, int64_t *cand,
                      int64_t *indices, uint8_t *drop, float *top, float *weights, int64_t *tied,
                      int64_t *ntied) {
    *ntied = 0;
    if (K < 1 || K > N || K > MAXK || (renorm && K > 2))
        return 2;
    for (int64_t t = 0; t < T; t++)
        if (!row_finite(logits, t, N, code))
            return 1;
    const int64_t keep = K < N ? K + 1 : K; /* the K + 1 largest, to see a tie at the boundary */
    for (int64_t t = 0; t < T; t++) {
        float val[MAXK + 1];
        int64_t idx[MAXK + 1];
        if (row_top(probs + t * N, N, keep, val, idx))
            return 2;
        int tie = 0;
        for (int64_t j = 0; j + 1 < keep; j++)
            tie |= val[j] == val[j + 1];
        if (tie) {
            tied[(*ntied)++] = t;
            continue;
        }
        const int64_t o = t * K;
        row_out(N, K, val, idx, entropy[t], tau, renorm, cand + o, indices + o, drop + o, top ? top + o : NULL,
                weights + o);
    }
    return 0;
}

/* Rows rows[0..R) of the outputs of adaptk_route_topk (the same arguments) from their top K
 * as torch.topk(sorted=True) gives them: val [R, K] float32 and idx [R, K] int64, row j of which
 * is row rows[j] of probs (its ties in torch's order). */
void adaptk_route_rows(const float *val, const int64_t *idx, const int64_t *rows, int64_t R, int64_t N, int64_t K,
                       const float *entropy, const float *tau, int renorm, int64_t *cand, int64_t *indices,
                       uint8_t *drop, float *top, float *weights) {
    for (int64_t j = 0; j < R; j++) {
        const int64_t t = rows[j], o = t * K;
        row_out(N, K, val + j * K, idx + j * K, entropy[t], tau, renorm, cand + o, indices + o, drop + o,
                top ? top + o : NULL, weights + o);
    }
}

/* entropy [T], cand [T, K] and drop [T, K] as adaptk_route_topk writes them: adds the T tokens
 * to the counters (count_row; kmax >= K). */
void adaptk_count(const float *entropy, const int64_t *cand, const uint8_t *drop, int64_t T, int64_t N, int64_t K,
                  int64_t *counts, int64_t kmax, double *moments) {
    for (int64_t t = 0; t < T; t++)
        count_row(N, K, cand + t * K, drop + t * K, entropy[t], counts, kmax, moments);
}
