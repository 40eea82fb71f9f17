"""docs/scripts/row_spread.py (the uneven-rows analysis in docs/performance.md) runs on the bench's routed rows."""

import pytest
import torch
from doc_scripts import run_doc_script

from adaptk.bench.config import LayerShape
from adaptk.bench.synthetic import make_tokens


def test_row_spread_prints_the_cases(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_CACHE_DIR", str(tmp_path))
    pytest.importorskip("adaptk.experts.gemm").library()  # a C compiler builds the kernel here
    out = run_doc_script("row_spread.py", ["--shape", "tiny:32:16:6:2:24", "--repeats", "1"], monkeypatch, capsys)
    table = [line.split(" | ") for line in out if line.startswith("| ")]
    assert [row[0] for row in table[1:6]] == ["| native k", "| k=1 as routed",
                                              "| k=1 as routed, each expert's cost at its own rows, added",
                                              "| k=1 rows evened out", "| one read of all weights"]
    assert table[1][3] == "1.000 |"
    counts = [int(m.strip(" |")) for m in table[6][1:]]  # the row counts the routed layer has, each timed
    index = make_tokens(LayerShape("tiny", 32, 16, 6, 2, 24), torch.float32, torch.device("cpu"), seed=0).index
    routed = torch.bincount(index[:, 0], minlength=6)
    assert counts == sorted(set(routed.tolist()) - {0})  # one uniform layer per row count of the routed layer
    assert table[2][1] == f"{int(routed.min())}-{int(routed.max())}" and len(table[7]) == len(table[6])
