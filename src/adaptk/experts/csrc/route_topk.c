/* adaptk: the routing step of a softmax top-k router under an entropy-threshold policy, in one
 * call (adaptk/routing/fused.py). At one token a torch op costs microseconds of dispatch, and
 * more when the layer before has evicted the caches; this replaces the top-k, the threshold
 * comparison, the sentinel fill, the kept weights and (for K <= 2) their renormalisation, and
 * the NaN/Inf check of the logits, with one pass over [T, N].
 *
 * It reproduces torch's results bit for bit or declines: the top K are the K largest
 * probabilities, best first, which is torch.topk(sorted=True)'s answer whenever the K + 1 largest
 * values of a row are distinct; where two of them tie (torch's order among ties is its own) or a
 * probability is NaN, it returns 2 and the caller runs the torch ops instead. The entropy is
 * the caller's (torch's). Sums of K <= 2 terms are (0 + a) + b, as torch's sum of a short row.
 *
 * Shapes: T tokens, N experts, K kept at most (K <= N).
 */
#include <stdint.h>
#include <string.h>

#define MAXK 64

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
 * top [T, K] (the candidates' probabilities) and weights [T, K] (top, 0 where dropped, divided
 * by their sum if renorm, which needs K <= 2).
 * Returns 0; 1 if a logit is NaN or Inf (checked first, for every row); 2 if a row has a NaN
 * probability or a tie among its K + 1 largest probabilities (outputs then undefined). */
int adaptk_route_topk(const float *probs, int64_t T, int64_t N, int64_t K, const float *entropy,
                      const float *tau, const void *logits, int code, int renorm, int64_t *cand,
                      int64_t *indices, uint8_t *drop, float *top, float *weights) {
    if (K < 1 || K > N || K > MAXK || (renorm && K > 2))
        return 2;
    for (int64_t t = 0; t < T; t++)
        if (!row_finite(logits, t, N, code))
            return 1;
    const int64_t keep = K < N ? K + 1 : K; /* the K + 1 largest, to see a tie at the boundary */
    for (int64_t t = 0; t < T; t++) {
        const float *p = probs + t * N;
        float val[MAXK + 1];
        int64_t idx[MAXK + 1];
        int64_t filled = 0;
        for (int64_t i = 0; i < N; i++) {
            float v = p[i];
            if (v != v)
                return 2;
            if (filled == keep && !(v > val[keep - 1]))
                continue;
            int64_t j = filled < keep ? filled++ : keep - 1;
            while (j > 0 && v > val[j - 1]) { /* insertion: strictly greater moves up */
                val[j] = val[j - 1];
                idx[j] = idx[j - 1];
                j--;
            }
            val[j] = v;
            idx[j] = i;
        }
        for (int64_t j = 0; j + 1 < keep; j++)
            if (val[j] == val[j + 1])
                return 2;
        float sum = 0.0f;
        for (int64_t r = 0; r < K; r++) {
            int d = entropy[t] < tau[r];
            int64_t o = t * K + r;
            cand[o] = idx[r];
            indices[o] = d ? N : idx[r];
            drop[o] = (uint8_t)d;
            top[o] = val[r];
            weights[o] = d ? 0.0f : val[r];
            sum += weights[o];
        }
        if (renorm)
            for (int64_t r = 0; r < K; r++)
                weights[t * K + r] /= sum;
    }
    return 0;
}
