"""HTML and Markdown from a results dict (numbers come only from the dict)."""

from __future__ import annotations

import base64
import html
import json

from adaptk.report import tables as T
from adaptk.report.summary import summary


def _meta_lines(r: dict) -> list[str]:
    m = r["meta"]
    return [f"model: {m.get('model_name', m['model']['architecture'])} ({m['model']['num_moe_layers']} MoE layers, "
            f"N={m['model']['num_experts'][0]}, native k={m['model']['native_k'][0]})",
            f"calibration: {m.get('calib_source', '?')}, {m['calib_tokens']} tokens; evaluation: "
            f"{m.get('eval_source', '?')}, {m['eval_tokens']} tokens",
            f"perplexity: sliding window {m['window']} tokens, stride {m['stride']}; matched-k runs on "
            f"{m['match_tokens']} {((r.get('pareto') or {}).get('matched_on') or 'calib')} tokens",
            f"runtime: {m.get('seconds', 0):.1f} s on {m.get('threads')} threads"] + _interval_line(m)


def _interval_line(m: dict) -> list[str]:
    iv = m.get("interval")
    if not iv:
        return []
    how = (f"block bootstrap, {iv.get('n_boot')} resamples, seed {iv.get('seed')}" if iv.get("method") == "bootstrap"
           else "block standard error")
    return [f"intervals: {iv.get('level', 0.95):.0%}, paired with native top-k on the same tokens, {how}; "
            "a block is the tokens one evaluation window scores"
            + (f"; token sample: {m['sample']}" if m.get("sample") else "")]


def _md_table(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown(r: dict, images: dict[str, str]) -> str:
    parts = ["# adaptk evaluation report", "", f"**Summary.** {summary(r)}", ""] + [f"- {x}" for x in _meta_lines(r)] + [""]
    cal = r["calibrated"]
    pf = cal.get("policy_file") or {}
    parts.append(f"Calibrated policy: `{json.dumps(pf.get('policy'))}` (strategy "
                 f"{(pf.get('calibration') or {}).get('strategy')}); ppl increase {T.increase(cal)}"
                 + (f". Note: {cal['note']}" if cal.get("note") else ""))
    for title, fn in T.SECTIONS:
        t = fn(r)
        if t:
            parts += ["", f"## {title}", ""] + [x for n in T.notes(title, r) for x in (n, "")] + [_md_table(*t)]
    parts += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in images.items()]
    return "\n".join(parts) + "\n"


def _html_table(head, rows) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th{background:#f0f0f0}img{max-width:100%}code{background:#f4f4f4}")


def html_page(r: dict, pngs: dict[str, bytes]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>adaptk report</title><style>{CSS}</style>"
             f"</head><body><h1>adaptk evaluation report</h1><p class='summary'><b>Summary.</b> "
             f"{html.escape(summary(r))}</p><ul>"]
    parts += [f"<li>{html.escape(x)}</li>" for x in _meta_lines(r)] + ["</ul>"]
    pf = r["calibrated"].get("policy_file") or {}
    parts.append(f"<p>Calibrated policy: <code>{html.escape(json.dumps(pf.get('policy')))}</code></p>")
    for title, fn in T.SECTIONS:
        t = fn(r)
        if t:
            note = "".join(f"<p>{html.escape(n)}</p>" for n in T.notes(title, r))
            parts.append(f"<h2>{html.escape(title)}</h2>{note}{_html_table(*t)}")
    for name, data in pngs.items():
        b64 = base64.b64encode(data).decode()
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{name}' src='data:image/png;base64,{b64}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
