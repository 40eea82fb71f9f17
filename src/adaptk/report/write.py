"""Write a report folder through :mod:`adaptk.outputs`: every file is staged in full, then renamed
into place; only adaptk's own files are ever replaced, and a folder adaptk did not write is refused
unless ``overwrite`` (then same-named files are replaced and nothing else is touched)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from adaptk.errors import AdaptkError
from adaptk.outputs import OutputError, OutputExistsError, check_folder, entries_are, register_legacy, write_folder
from adaptk.report import plots
from adaptk.report.render import html_page, markdown

log = logging.getLogger(__name__)
KIND = "report"


class ReportError(AdaptkError, OSError):
    """The report cannot be written (or the results cannot be read)."""


def _legacy_report(folder: Path) -> list[str] | None:
    """A report folder of an adaptk version before the output marker: nothing but report files,
    with a results.json that is an evaluation's."""
    names = entries_are(folder, {"results.json", "report.html", "summary.md", *(f"{n}.png" for n in plots.PLOTS)},
                        "results.json")
    if names is None:
        return None
    data = json.loads((folder / "results.json").read_text())
    return names if isinstance(data, dict) and {"meta", "baseline", "calibrated"} <= data.keys() else None


register_legacy(KIND, _legacy_report)


def check_report_out(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate the report folder without writing (call it before any long computation)."""
    try:
        return check_folder(out, KIND, overwrite=overwrite)
    except OutputExistsError:
        raise
    except OutputError as exc:
        raise ReportError(str(exc)) from exc


def write_report(results: dict, out: str | os.PathLike, extra_files: dict[str, str] | None = None, *,
                 overwrite: bool = False) -> Path:
    """results.json, report.html (self-contained), summary.md and PNG plots under ``out``."""
    check_report_out(out, overwrite)
    files: dict[str, str | bytes] = {"results.json": json.dumps(results, indent=1)}
    pngs = {}
    for name, fn in plots.PLOTS.items():
        data = fn(results)
        if data:
            files[f"{name}.png"] = data
            pngs[name] = data
    files["report.html"] = html_page(results, pngs)
    files["summary.md"] = markdown(results, {k: f"{k}.png" for k in pngs})
    files.update(extra_files or {})
    try:
        return write_folder(out, KIND, files, overwrite=overwrite)
    except OutputExistsError:
        raise
    except OutputError as exc:
        raise ReportError(str(exc)) from exc


def load_results(path: str | os.PathLike) -> dict:
    """Read ``adaptk evaluate``'s results.json (or the folder holding it) and check its structure."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ReportError(f"no results at {p}; run `adaptk evaluate` first") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read results {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"results {p} are a JSON {type(data).__name__}, not an object; is it adaptk evaluate output?")
    for key in ("meta", "baseline", "calibrated", "layerwise", "entropy_distribution"):
        if key not in data:
            raise ReportError(f"results {p} lack the {key!r} section; is it adaptk evaluate output?")
    problem = _check(data, RESULTS_SPEC, "")
    if problem:
        raise ReportError(f"results {p} are malformed: {problem}; re-run `adaptk evaluate` to write them again")
    return data


# The structure the report and the summary table read (what they index or format as numbers).
# A spec is a type (or tuple of types), a dict {key: spec} (a key ending in "?" is optional), or a
# one-element list [spec] (a list of such items).
NUM = (int, float)
OPT_NUM = (int, float, type(None))
_RUN = {"ppl": NUM, "average_k": NUM, "compute_fraction": NUM, "tokens_per_second": NUM}
_ENTROPY = {k: OPT_NUM for k in ("mean", "std", "min", "max", "mean_normalized", "share_below_50pct_logN",
                                  "share_above_90pct_logN")}
_TOKENS = {k: OPT_NUM for k in ("tokens", "mean_k", "mean_frequency_rank", "median_frequency_rank", "mean_loss")}
RESULTS_SPEC: dict = {
    "meta": {"model": {"architecture": str, "num_moe_layers": int, "num_experts": [int], "native_k": [int]},
             "calib_tokens": NUM, "eval_tokens": NUM, "window": NUM, "stride": NUM, "match_tokens": NUM,
             "seconds?": NUM},
    "baseline": _RUN,
    "calibrated": {**_RUN, "ppl_increase": NUM, "ppl_increase_lo?": OPT_NUM, "ppl_increase_hi?": OPT_NUM, "policy_file?": (dict, type(None)), "k_histogram?": [NUM],
                   "note?": (str, type(None))},
    "layerwise": [{"layer": int, "entropy_mean": OPT_NUM, "entropy_std": OPT_NUM, "average_k": OPT_NUM,
                   "compute_fraction": OPT_NUM, "k_histogram": [NUM]}],
    "entropy_distribution": {"evaluation": {"layers": [{"layer": int, **_ENTROPY}],
                                            "pooled?": ({**_ENTROPY}, type(None))}},
    "threshold_sensitivity?": [{k: OPT_NUM for k in ("alpha", "threshold", "ppl", "ppl_increase", "average_k",
                                                      "compute_fraction")}],
    "granularity?": [{"k_values": list}],
    "token_characteristics?": ({"low_k": _TOKENS, "high_k": _TOKENS, "all": _TOKENS}, type(None)),
    "pareto?": ({"baseline_ppl": NUM, "rows": [{"rule": str, "budget_fraction": OPT_NUM, "eval_avg_k": NUM,
                                                "ppl": NUM, "compute_fraction": OPT_NUM,
                                                "tokens_per_second": OPT_NUM, "ppl_increase?": NUM,
                                                "ppl_increase_lo?": OPT_NUM, "ppl_increase_hi?": OPT_NUM}],
                 "comparisons?": [{"budget_fraction": NUM, "best": str, "other": str, "difference": NUM,
                                   "lo": NUM, "hi": NUM, "distinguishable": bool}]}, type(None)),
    "entropy_histograms?": [{"counts": [NUM], "edges": [NUM]}],
    "expert_usage?": [{"native": [NUM], "policy": [NUM]}],
}


def _type_name(spec) -> str:
    if isinstance(spec, dict):
        return "an object"
    if isinstance(spec, list):
        return "a list"
    if isinstance(spec, tuple):
        names = [_type_name(s) for s in spec if s is not type(None) and not (s is int and float in spec)]
        return " or ".join(dict.fromkeys(names)) + (" or null" if type(None) in spec else "")
    return {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(spec, spec.__name__)


def _check(value, spec, where: str) -> str | None:
    """The first place where ``value`` does not fit ``spec`` (e.g. "'layerwise'[0]['k_histogram'] is a
    string, not a list"), or None."""
    if isinstance(spec, tuple):
        sub = [s for s in spec if not isinstance(s, type)]
        types = tuple(s for s in spec if isinstance(s, type))
        if types and isinstance(value, types) and not isinstance(value, bool):
            return None
        for s in sub:
            if _fits(value, s):
                return _check(value, s, where)
        return _mismatch(value, spec, where)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return _mismatch(value, spec, where)
        for key, s in spec.items():
            name = key.rstrip("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{_where(where)} lacks {name!r}"
            problem = _check(value[name], s, f"{where}[{name!r}]")
            if problem:
                return problem
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return _mismatch(value, spec, where)
        for i, item in enumerate(value):
            problem = _check(item, spec[0], f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, spec) and not (isinstance(value, bool) and spec is not bool):
        return None
    return _mismatch(value, spec, where)


def _fits(value, spec) -> bool:
    return (isinstance(spec, dict) and isinstance(value, dict)) or (isinstance(spec, list) and isinstance(value, list))


def _mismatch(value, spec, where: str) -> str:
    got = "null" if value is None else {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                                        list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    return f"{_where(where)} is {got}, not {_type_name(spec)}"


def _where(where: str) -> str:
    return where.lstrip("[").replace("][", " > ").rstrip("]") or "the top level"
