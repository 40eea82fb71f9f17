"""Token windows and the deterministic batch order (the data position is a pure function of the step)."""

from __future__ import annotations

import torch

from adaptk.train.errors import TrainConfigError


class TokenWindows:
    """Non-overlapping windows of ``seq_len`` tokens from one token stream; batch ``step`` is the
    ``batch_size`` windows at positions ``step*B .. step*B+B-1`` of the sequence of per-epoch
    permutations (epoch e shuffled by ``seed + e``). Resuming at step s therefore continues at
    exactly the same data position."""

    def __init__(self, ids: list[int], seq_len: int, batch_size: int, seed: int, what: str = "train") -> None:
        n = len(ids) // seq_len
        if n < batch_size:
            raise TrainConfigError(
                f"the {what} text has {len(ids)} tokens = {n} windows of {seq_len}, fewer than one batch of "
                f"{batch_size}; give more text or lower --batch-size / --seq-len"
            )
        self.windows = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)  # [W, S]
        self.batch_size, self.seed = batch_size, seed
        self._perm: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.windows.shape[0]

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm:
            self._perm = {epoch: torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed + epoch))}
        return self._perm[epoch]

    def batch(self, step: int) -> torch.Tensor:
        """[B, S] token ids of training step ``step`` (0-based)."""
        rows = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, i = divmod(pos, len(self))
            rows.append(int(self._order(epoch)[i]))
        return self.windows[rows]

    def sequential(self, max_batches: int):
        """Evaluation batches in order: [B, S] each, at most ``max_batches``."""
        for b in range(min(max_batches, len(self) // self.batch_size)):
            yield self.windows[b * self.batch_size:(b + 1) * self.batch_size]
