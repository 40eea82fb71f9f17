"""Run a script of docs/scripts as ``python docs/scripts/NAME ARGS`` would, inside the test process."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "docs" / "scripts"


def run_doc_script(name: str, args: list[str], monkeypatch, capsys) -> list[str]:
    """The lines the script prints; torch's thread count (the scripts set one) is restored."""
    script = SCRIPTS / name
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out.splitlines()
