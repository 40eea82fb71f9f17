"""How the CPU back-end cuts a layer's experts into calls (``expert_runs``)."""

from hypothesis import given
from hypothesis import strategies as st

from adaptk.experts.cpu_fast import expert_runs, row_starts


@given(counts=st.lists(st.integers(0, 20), max_size=12), group_rows=st.integers(1, 40))
def test_runs_cover_every_row_once_in_order(counts, group_rows):
    runs = list(expert_runs(counts, group_rows))
    starts = row_starts(counts).tolist()
    # runs tile the rows in expert order, each a span of consecutive experts
    assert [r0 for _, _, r0, _ in runs] == [starts[first] for first, _, _, _ in runs]
    assert [r1 for _, _, _, r1 in runs] == [starts[end] for _, end, _, _ in runs]
    assert sum(r1 - r0 for *_, r0, r1 in runs) == sum(counts)
    assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:]))
    for i, (first, end, r0, r1) in enumerate(runs):
        assert counts[first] > 0 and counts[end - 1] > 0  # no empty expert at either end
        assert r1 - r0 - counts[end - 1] < group_rows  # closed as soon as it held group_rows
        if i < len(runs) - 1:
            assert r1 - r0 >= group_rows  # only the last run may hold fewer
    if group_rows == 1:  # every expert with rows alone
        assert [(f, e) for f, e, _, _ in runs] == [(e, e + 1) for e, c in enumerate(counts) if c]
