/* adaptk: the layout of a layer's routing counters (adaptk.routing.stats.LayerStats), declared once.
 *
 * The C routers (route_rows.h's count_row; router_ext.cpp checks the sizes) add the tokens they
 * route to two tensors of the patch's statistics, in place:
 *   counts  int64 [ADAPTK_COUNTS_SIZE(kmax, n)]: tokens by kept k (k = 0..kmax), then routing
 *           slots by expert (e = 0..n-1), then the dropped slots (the sentinel expert id n);
 *   moments float64 [ADAPTK_MOMENTS_SIZE]: the sum of the tokens' entropies and of their squares.
 * kmax is the most experts a token may keep, n the layer's experts.
 *
 * adaptk.routing.counters reads this file at import: each #define below is one line
 * "#define ADAPTK_NAME(args) expression" or "#define ADAPTK_NAME integer", the expression made of
 * its arguments, integers, + - * and parentheses only. adaptk.native.build compiles the sources
 * with this file beside them and keys its cache on it.
 */
#ifndef ADAPTK_COUNTERS_H
#define ADAPTK_COUNTERS_H

#define ADAPTK_KHIST_AT(kmax, n, k) (k)
#define ADAPTK_EXPERT_AT(kmax, n, e) ((kmax) + 1 + (e))
#define ADAPTK_DROPPED_AT(kmax, n) ((kmax) + 1 + (n))
#define ADAPTK_COUNTS_SIZE(kmax, n) ((kmax) + 1 + (n) + 1)
#define ADAPTK_MOMENT_SUM 0
#define ADAPTK_MOMENT_SUMSQ 1
#define ADAPTK_MOMENTS_SIZE 2

#endif
