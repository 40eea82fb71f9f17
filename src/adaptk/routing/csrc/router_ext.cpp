/* adaptk's two routers bound through torch's C++ API (adaptk.routing.binding builds this file with
 * route_topk.c and route_native.c). At one token, right after a layer call, each torch op and attribute read from
 * Python costs more than the routing arithmetic; here they are plain C++ calls.
 *
 * Fused (adaptk.patch's default, routing="fused"): the model's own router ops (its linear layer
 * and float32 softmax: the same at:: ops that F.linear and F.softmax call, so the same bits),
 * torch's entropy, route_topk.c's adaptk_route_topk (the top-k, the threshold comparison,
 * the sentinel fill, the kept weights; the rows whose top K + 1 tie take torch.topk's answer,
 * as the torch ops would) and adaptk_count (the patch's statistics, under their lock), in one
 * Python call. It declines (returns None) every call the Python path would hand to the torch
 * ops, and every call with a NaN/Inf logit.
 *
 * Router (routing="native"): the checks on the call's tensors, the three output tensors and the
 * C call of route_native.c's adaptk_route_native. The arithmetic is route_native.c's, so the results
 * are the ctypes binding's (fused.NativeRouter.route_ctypes), bit for bit.
 *
 * Shapes: T tokens, H hidden size, N experts, K = tau's length.
 */
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/special_entr.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/topk.h>
#include <torch/csrc/utils/pybind.h>

#include <stdexcept>
#include <string>

#include "counters.h"  // the counters' sizes (the C routers count into them as it declares)

namespace py = pybind11;

extern "C" int adaptk_route_topk(const float *probs, int64_t T, int64_t N, int64_t K, const float *entropy,
                                 const float *tau, const void *logits, int code, int renorm, int64_t *cand,
                                 int64_t *indices, uint8_t *drop, float *top, float *weights, int64_t *tied,
                                 int64_t *ntied);
extern "C" void adaptk_route_rows(const float *val, const int64_t *idx, const int64_t *rows, int64_t R, int64_t N,
                                  int64_t K, const float *entropy, const float *tau, int renorm, int64_t *cand,
                                  int64_t *indices, uint8_t *drop, float *top, float *weights);
extern "C" void adaptk_count(const float *entropy, const int64_t *cand, const uint8_t *drop, int64_t T, int64_t N,
                             int64_t K, int64_t *counts, int64_t kmax, double *moments);
extern "C" int adaptk_route_native(const void *hidden, const void *weight, int64_t T, int64_t H, int64_t N,
                                   int64_t K, int bf16, const float *tau, int renorm, void *logits,
                                   int64_t *indices, void *weights, int wbf16, float *entropy, int64_t *cand,
                                   uint8_t *drop, int64_t *counts, int64_t kmax, double *moments);

namespace {

constexpr int64_t kLastDim[] = {-1};
constexpr int64_t kFewTokens = 64;  // Fused: the tied rows' list on the stack up to this many tokens
const at::IntArrayRef kLast(kLastDim);  // dim=-1

/* tau, if it is rank thresholds the C code takes (else invalid_argument) */
at::Tensor checked_tau(at::Tensor tau) {
    if (tau.scalar_type() != at::kFloat || tau.dim() != 1 || tau.size(0) < 1 || !tau.is_contiguous() || !tau.is_cpu())
        throw std::invalid_argument("tau must be a contiguous 1-D float32 CPU tensor of at least one threshold");
    return tau;
}

/* route_topk.c's code for the logits' dtype (0: one it does not check) */
int logit_code(at::ScalarType dtype) {
    return dtype == at::kFloat ? 1 : dtype == at::kBFloat16 ? 2 : dtype == at::kHalf ? 3 : 0;
}

/* Holds a Python lock (threading.Lock's bound acquire and release) for its lifetime; acquire
 * waits without the GIL. */
class Locked {
  public:
    Locked(const py::object &acquire, const py::object &release) : release_(release) { acquire(); }
    ~Locked() { release_(); }
    Locked(const Locked &) = delete;
    Locked &operator=(const Locked &) = delete;

  private:
    const py::object &release_;
};

/* The patch's statistics of one layer (LayerStats, or None: nothing counted) as the C code
 * counts into them in place: its counters' addresses (kept alive by the object, zeroed in place
 * by its reset; laid out as counters.h declares, their sizes checked here) and its lock. For a
 * router keeping up to k experts. */
class Counters {
  public:
    Counters(py::object stats, int64_t k) : stats_(std::move(stats)) {
        if (stats_.is_none())
            return;
        const auto c = stats_.attr("counts").cast<at::Tensor>(), m = stats_.attr("entropy_moments").cast<at::Tensor>();
        if (!c.is_cpu() || c.scalar_type() != at::kLong || !c.is_contiguous() || !m.is_cpu() ||
            m.scalar_type() != at::kDouble || !m.is_contiguous())
            throw std::invalid_argument("the statistics' counters must be contiguous CPU int64 and float64");
        counts = c.data_ptr<int64_t>();
        moments = m.data_ptr<double>();
        kmax = stats_.attr("kmax").cast<int64_t>();
        experts_ = stats_.attr("num_experts").cast<int64_t>();
        if (kmax < k)
            throw std::invalid_argument("the statistics count k up to " + std::to_string(kmax) +
                                        "; this router keeps up to " + std::to_string(k));
        if (c.numel() != ADAPTK_COUNTS_SIZE(kmax, experts_) || m.numel() != ADAPTK_MOMENTS_SIZE)
            throw std::invalid_argument("the statistics' counters hold " + std::to_string(c.numel()) + " and " +
                                        std::to_string(m.numel()) + " values; counters.h lays out " +
                                        std::to_string(ADAPTK_COUNTS_SIZE(kmax, experts_)) + " and " +
                                        std::to_string(ADAPTK_MOMENTS_SIZE) + " for kmax " +
                                        std::to_string(kmax) + " and " + std::to_string(experts_) + " experts");
        acquire_ = stats_.attr("lock").attr("acquire");
        release_ = stats_.attr("lock").attr("release");
    }

    bool none() const { return stats_.is_none(); }

    void check_experts(int64_t n) const {
        if (experts_ >= 0 && n != experts_)
            throw std::invalid_argument("the statistics count " + std::to_string(experts_) +
                                        " experts; this router has " + std::to_string(n));
    }

    /* call() (the C code counting into counts and moments, without the GIL) under the lock, one
     * thread at a time; its status. */
    template <class Call> int locked(const Call &call) const {
        Locked held(acquire_, release_);
        return call();
    }

    int64_t *counts = nullptr;
    double *moments = nullptr;
    int64_t kmax = 0;

  private:
    py::object stats_, acquire_, release_;
    int64_t experts_ = -1;
};

/* One layer's fused router (adaptk.patch's default), bound once: tau [K] float32, renormalise
 * (the C code divides sums of K <= 2, torch's sum longer ones, as RenormalisedTopK), the
 * weights' dtype (out: 0 float32, 1 the logits', 2 the hidden states'), whether the model's
 * scores flatten hidden to [T, H] first, and the statistics to count in (LayerStats or None). */
class Fused {
  public:
    Fused(at::Tensor tau, bool renorm, int64_t out, bool flatten, py::object stats)
        : tau_(checked_tau(std::move(tau))), renorm_(renorm), out_(out), flatten_(flatten),
          counters_(std::move(stats), tau_.size(0)) {
        if (out_ < 0 || out_ > 2)
            throw std::invalid_argument("out must be 0 (float32), 1 (the logits' dtype) or 2 (the hidden dtype)");
    }

    /* hidden [..., H] (flattened to [T, H] if flatten; else [T, H] only) and weight [N, H] ->
     * (logits [T, N], weights [T, K], indices [T, K]) as the model's scores and the torch ops
     * give them, the tokens counted; or None for a call the torch ops must route (on another
     * device, under autograd, another hidden size, a dtype or shape route_topk.c does not take,
     * a NaN/Inf logit), with nothing counted. A row whose K + 1 largest probabilities tie takes
     * its top K from at::topk (the torch ops' call, on those rows: torch's order among ties). */
    py::object operator()(const at::Tensor &hidden, const at::Tensor &weight) const {
        if (!hidden.is_cpu() || !weight.is_cpu() || weight.dim() != 2 || hidden.dim() < 1 ||
            hidden.size(-1) != weight.size(1) || (!flatten_ && hidden.dim() != 2) ||
            (at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad())))
            return py::none();
        const int64_t n = weight.size(0), k = tau_.size(0);
        counters_.check_experts(n);
        const auto x = flatten_ ? hidden.reshape({-1, weight.size(1)}) : hidden;  // [T, H]
        const auto logits = at::linear(x, weight);                                  // [T, N], as F.linear
        const auto probs = at::softmax(logits, -1, at::kFloat);                     // [T, N], as F.softmax
        const int code = logit_code(logits.scalar_type());
        const int64_t t = probs.size(0);
        if (t < 1 || k > std::min<int64_t>(n, 64) || code == 0 || !probs.is_contiguous() || !logits.is_contiguous())
            return py::none();
        const auto entropy = at::sum(at::special_entr(probs), kLast);  // [T], as entropy_nats
        const auto long_opts = probs.options().dtype(at::kLong);
        auto cand = at::empty({t, k}, long_opts), indices = at::empty({t, k}, long_opts);
        auto drop = at::empty({t, k}, probs.options().dtype(at::kBool));
        auto weights = at::empty({t, k}, probs.options());
        // [T]: the rows whose top K + 1 tie, the first ntied; on the stack for a few tokens (a
        // decode step allocates nothing more for it)
        int64_t few[kFewTokens];
        const auto many = t > kFewTokens ? at::empty({t}, long_opts) : at::Tensor();
        int64_t *const tied = many.defined() ? many.data_ptr<int64_t>() : few;
        const auto drops = reinterpret_cast<uint8_t *>(drop.data_ptr());
        const int renorm = renorm_ && k <= 2;
        int status;
        int64_t ntied = 0;
        {
            py::gil_scoped_release unlocked;
            // the logits always checked: a NaN/Inf goes to the torch ops, which raise (the eager
            // check) or count it (the deferred one) as they do
            status = adaptk_route_topk(probs.data_ptr<float>(), t, n, k, entropy.data_ptr<float>(),
                                       tau_.data_ptr<float>(), logits.data_ptr(), code, renorm,
                                       cand.data_ptr<int64_t>(), indices.data_ptr<int64_t>(), drops, nullptr,
                                       weights.data_ptr<float>(), tied, &ntied);
        }
        if (status != 0)
            return py::none();  // 1: a NaN/Inf logit, 2: a NaN probability
        if (ntied > 0) {  // those rows' top K as the torch ops' topk gives them: [ntied, K] each
            const auto rows = at::from_blob(tied, {ntied}, long_opts);  // read before the call returns
            const auto [val, idx] = at::topk(at::index_select(probs, 0, rows), k, -1, true, true);
            const auto v = val.contiguous(), i = idx.contiguous();
            adaptk_route_rows(v.data_ptr<float>(), i.data_ptr<int64_t>(), rows.data_ptr<int64_t>(), ntied, n, k,
                              entropy.data_ptr<float>(), tau_.data_ptr<float>(), renorm, cand.data_ptr<int64_t>(),
                              indices.data_ptr<int64_t>(), drops, nullptr, weights.data_ptr<float>());
        }
        if (!counters_.none())  // only the counting under the statistics' lock
            counters_.locked([&] {
                py::gil_scoped_release unlocked;
                adaptk_count(entropy.data_ptr<float>(), cand.data_ptr<int64_t>(), drops, t, n, k, counters_.counts,
                             counters_.kmax, counters_.moments);
                return 0;
            });
        if (renorm_ && k > 2)  // torch's own sum, as RenormalisedTopK: the same bits
            weights = at::div(weights, at::sum(weights, kLast, true));
        const auto dtype = out_ == 1 ? logits.scalar_type() : out_ == 2 ? hidden.scalar_type() : at::kFloat;
        if (weights.scalar_type() != dtype)
            weights = weights.to(dtype);
        return py::make_tuple(logits, weights, indices);
    }

  private:
    at::Tensor tau_;
    bool renorm_;
    int64_t out_;
    bool flatten_;
    Counters counters_;
};

/* One layer's native router, bound once: tau [K] float32, renormalise, the weights' dtype (the
 * hidden dtype if as_input, else float32), the most tokens a call may have, whether the model's
 * scores flatten hidden to [T, H] first (as Fused's), and the statistics to count in (LayerStats
 * or None). */
class Router {
  public:
    Router(at::Tensor tau, bool renorm, bool as_input, int64_t max_tokens, bool flatten, py::object stats)
        : tau_(checked_tau(std::move(tau))), renorm_(renorm), as_input_(as_input), flatten_(flatten),
          max_tokens_(max_tokens), counters_(std::move(stats), tau_.size(0)) {}

    /* hidden [..., H] (flattened to [T, H] if flatten; else [T, H] only) and weight [N, H] ->
     * (logits [T, N], weights [T, K], indices [T, K]), or None for a call the other paths must
     * route: not float32/bfloat16 alike, not contiguous CPU, more than max_tokens tokens, under
     * autograd, a shape route_native.c declines, or a NaN/Inf logit (then nothing is counted). */
    py::object operator()(const at::Tensor &hidden, const at::Tensor &weight) const {
        const auto dtype = hidden.scalar_type();
        if (!hidden.is_cpu() || !weight.is_cpu() || weight.scalar_type() != dtype ||
            (dtype != at::kFloat && dtype != at::kBFloat16) || hidden.dim() < 1 || weight.dim() != 2 ||
            hidden.size(-1) != weight.size(1) || (!flatten_ && hidden.dim() != 2) || !hidden.is_contiguous() ||
            !weight.is_contiguous() || (at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad())))
            return py::none();
        const int64_t h = weight.size(1), n = weight.size(0), k = tau_.size(0);
        const int64_t t = h > 0 ? hidden.numel() / h : 0;
        if (t < 1 || t > max_tokens_)
            return py::none();
        counters_.check_experts(n);
        const bool bf16 = dtype == at::kBFloat16;
        auto logits = at::empty({t, n}, hidden.options());
        auto indices = at::empty({t, k}, hidden.options().dtype(at::kLong));
        auto weights = at::empty({t, k}, hidden.options().dtype(as_input_ ? dtype : at::kFloat));
        const auto call = [&] {
            py::gil_scoped_release unlocked;
            return adaptk_route_native(hidden.data_ptr(), weight.data_ptr(), t, h, n, k, bf16, tau_.data_ptr<float>(),
                                       renorm_, logits.data_ptr(), indices.data_ptr<int64_t>(), weights.data_ptr(),
                                       bf16 && as_input_, nullptr, nullptr, nullptr, counters_.counts,
                                       counters_.kmax, counters_.moments);
        };
        if ((counters_.none() ? call() : counters_.locked(call)) != 0)
            return py::none();  // 1: a NaN/Inf logit (nothing counted), 2: a shape route_native.c declines
        return py::make_tuple(logits, weights, indices);
    }

  private:
    at::Tensor tau_;
    bool renorm_, as_input_, flatten_;
    int64_t max_tokens_;
    Counters counters_;
};

}  // namespace

PYBIND11_MODULE(adaptk_router, m) {
    py::class_<Fused>(m, "Fused")
        .def(py::init<at::Tensor, bool, int64_t, bool, py::object>())
        .def("__call__", &Fused::operator());
    py::class_<Router>(m, "Router")
        .def(py::init<at::Tensor, bool, bool, int64_t, bool, py::object>())
        .def("__call__", &Router::operator());
}
