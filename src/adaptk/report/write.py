"""Write a report folder atomically: everything goes to a temp folder next to the target, which
is renamed into place at the end, so a failure leaves no partial report."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from adaptk.errors import AdaptkError
from adaptk.report import plots
from adaptk.report.render import html_page, markdown

log = logging.getLogger(__name__)


class ReportError(AdaptkError, OSError):
    """The report cannot be written (or the results cannot be read)."""


def write_report(results: dict, out: str | os.PathLike, extra_files: dict[str, str] | None = None) -> Path:
    """results.json, report.html (self-contained), summary.md and PNG plots under ``out``."""
    out = Path(out).resolve()
    parent = out.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise ReportError(f"cannot create {parent}: {exc.strerror or exc}") from exc
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise ReportError(f"cannot write the report under {parent}: {exc.strerror or exc}") from exc
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a report folder is an ordinary folder
        (tmp / "results.json").write_text(json.dumps(results, indent=1))
        pngs = {}
        for name, fn in plots.PLOTS.items():
            data = fn(results)
            if data:
                (tmp / f"{name}.png").write_bytes(data)
                pngs[name] = data
        (tmp / "report.html").write_text(html_page(results, pngs))
        (tmp / "summary.md").write_text(markdown(results, {k: f"{k}.png" for k in pngs}))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReportError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_results(path: str | os.PathLike) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ReportError(f"no results at {p}; run `adaptk evaluate` first") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read results {p}: {exc}") from exc
    for key in ("meta", "baseline", "calibrated", "layerwise", "entropy_distribution"):
        if key not in data:
            raise ReportError(f"results {p} lack the {key!r} section; is it adaptk evaluate output?")
    return data
