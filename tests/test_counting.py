"""``adaptk.counting.count_ids``: each id's count, the sentinel id n not counted."""

import torch

from adaptk.counting import count_ids


def test_counts_each_id_and_skips_the_sentinel():
    ids = torch.tensor([[0, 2], [2, 3], [3, 3]])  # 3 = n: dropped slots
    assert count_ids(ids, 3).tolist() == [1, 0, 2]
    assert count_ids(torch.zeros(0, dtype=torch.long), 4).tolist() == [0, 0, 0, 0]
