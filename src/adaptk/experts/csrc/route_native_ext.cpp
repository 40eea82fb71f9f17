/* The native router (route_topk.c's adaptk_route_native) bound through torch's C++ API, for
 * adaptk.patch(routing="native"): the checks on the call's tensors, the three output tensors and
 * the C call in one Python call (adaptk.routing.binding builds it; fused.NativeRouter.route uses
 * it). At one token, right after a layer call, each torch op and attribute read from Python costs
 * microseconds; here they cost nanoseconds. The arithmetic is route_topk.c's, so the results are
 * the ctypes binding's, bit for bit.
 *
 * Shapes: T tokens, H hidden size, N experts, K = tau's length.
 */
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <stdexcept>
#include <string>

namespace py = pybind11;

extern "C" int adaptk_route_native(const void *hidden, const void *weight, int64_t T, int64_t H, int64_t N,
                                   int64_t K, int bf16, const float *tau, int renorm, void *logits,
                                   int64_t *indices, void *weights, int wbf16, float *entropy, int64_t *cand,
                                   uint8_t *drop, int64_t *counts, int64_t kmax, double *moments);

namespace {

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

/* One layer's router, bound once: tau [K] float32, renormalise, the weights' dtype (the hidden
 * dtype if as_input, else float32), the most tokens a call may have, and the statistics to count
 * in (LayerStats or None; the C code adds to its counters in place, under its lock, and a call
 * adds its tokens with stats.counted(T)). */
class Router {
  public:
    Router(at::Tensor tau, bool renorm, bool as_input, int64_t max_tokens, py::object stats)
        : tau_(std::move(tau)), renorm_(renorm), as_input_(as_input), max_tokens_(max_tokens),
          stats_(std::move(stats)) {
        if (tau_.scalar_type() != at::kFloat || tau_.dim() != 1 || !tau_.is_contiguous() || !tau_.is_cpu())
            throw std::invalid_argument("tau must be a contiguous 1-D float32 CPU tensor");
        if (!stats_.is_none()) {
            const auto counts = stats_.attr("counts").cast<at::Tensor>();
            const auto moments = stats_.attr("entropy_moments").cast<at::Tensor>();
            if (!counts.is_cpu() || counts.scalar_type() != at::kLong || !counts.is_contiguous() ||
                !moments.is_cpu() || moments.scalar_type() != at::kDouble || !moments.is_contiguous())
                throw std::invalid_argument("the statistics' counters must be contiguous CPU int64 and float64");
            counts_ = counts.data_ptr<int64_t>();  // kept alive by stats_, zeroed in place by its reset
            moments_ = moments.data_ptr<double>();
            kmax_ = stats_.attr("kmax").cast<int64_t>();
            experts_ = stats_.attr("num_experts").cast<int64_t>();
            acquire_ = stats_.attr("lock").attr("acquire");
            release_ = stats_.attr("lock").attr("release");
            counted_ = stats_.attr("counted");
        }
    }

    /* hidden [..., H] and weight [N, H] -> (logits [T, N], weights [T, K], indices [T, K]), or None
     * for a call the other paths must route: not float32/bfloat16 alike, not contiguous CPU, more
     * than max_tokens tokens, under autograd, a shape route_topk.c declines, or a NaN/Inf logit
     * (then nothing is counted). */
    py::object operator()(const at::Tensor &hidden, const at::Tensor &weight) const {
        const auto dtype = hidden.scalar_type();
        if (!hidden.is_cpu() || !weight.is_cpu() || weight.scalar_type() != dtype ||
            (dtype != at::kFloat && dtype != at::kBFloat16) || hidden.dim() < 1 || weight.dim() != 2 ||
            hidden.size(-1) != weight.size(1) || !hidden.is_contiguous() || !weight.is_contiguous() ||
            (at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad())))
            return py::none();
        const int64_t h = weight.size(1), n = weight.size(0), k = tau_.size(0);
        const int64_t t = h > 0 ? hidden.numel() / h : 0;
        if (t < 1 || t > max_tokens_)
            return py::none();
        if (experts_ >= 0 && n != experts_)
            throw std::invalid_argument("the statistics count " + std::to_string(experts_) +
                                        " experts; this router has " + std::to_string(n));
        const bool bf16 = dtype == at::kBFloat16;
        auto logits = at::empty({t, n}, hidden.options());
        auto indices = at::empty({t, k}, hidden.options().dtype(at::kLong));
        auto weights = at::empty({t, k}, hidden.options().dtype(as_input_ ? dtype : at::kFloat));
        const auto call = [&] {
            py::gil_scoped_release unlocked;
            return adaptk_route_native(hidden.data_ptr(), weight.data_ptr(), t, h, n, k, bf16, tau_.data_ptr<float>(),
                                       renorm_, logits.data_ptr(), indices.data_ptr<int64_t>(), weights.data_ptr(),
                                       bf16 && as_input_, nullptr, nullptr, nullptr, counts_, kmax_, moments_);
        };
        int status;
        if (stats_.is_none()) {
            status = call();
        } else {
            Locked held(acquire_, release_);  // the C code adds to the counters in place: one thread at a time
            status = call();
            if (status == 0)
                counted_(t);
        }
        if (status != 0)  // 1: a NaN/Inf logit (nothing counted), 2: a shape route_topk.c declines
            return py::none();
        return py::make_tuple(logits, weights, indices);
    }

  private:
    at::Tensor tau_;
    bool renorm_, as_input_;
    int64_t max_tokens_;
    py::object stats_, acquire_, release_, counted_;
    int64_t *counts_ = nullptr;
    double *moments_ = nullptr;
    int64_t kmax_ = 0, experts_ = -1;
};

}  // namespace

PYBIND11_MODULE(adaptk_router, m) {
    py::class_<Router>(m, "Router")
        .def(py::init<at::Tensor, bool, bool, int64_t, py::object>())
        .def("__call__", &Router::operator());
}
