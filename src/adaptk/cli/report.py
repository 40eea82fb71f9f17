"""``adaptk report``: render the HTML/Markdown/PNG report from ``adaptk evaluate``'s results.json."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results.json (or the folder holding it)")
    parser.add_argument("--out", "-o", default="adaptk-report",
                        help="report folder to write: new, empty or an earlier adaptk report (only adaptk's files "
                             "are replaced)")
    parser.add_argument("--overwrite", action="store_true",
                        help="also write into a --out folder adaptk did not write: same-named files are replaced, "
                             "nothing else in it is touched")


def run(args: argparse.Namespace) -> int:
    from adaptk.evaluate.summary import short_table
    from adaptk.report import load_results, write_report
    from adaptk.report.write import check_report_out

    check_report_out(args.out, args.overwrite)
    results = load_results(args.results)
    out = write_report(results, args.out, overwrite=args.overwrite)
    print(short_table(results))
    print(f"report: {out}/report.html")
    return 0
