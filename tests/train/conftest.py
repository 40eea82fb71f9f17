import random

import pytest

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=32, max_position_embeddings=64)


def make_text(lines: int = 400, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["def", "return", "self", "value", "import", "class", "for", "in", "if", "else", "None", "x", "y"]
    return "".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "\n" for _ in range(lines))


@pytest.fixture(scope="session")
def tiny_overrides() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_text() -> str:
    return make_text()


@pytest.fixture
def tiny_cfg(tmp_path, tiny_text):
    from adaptk.train import TrainConfig

    def make(**kw):
        base = dict(preset="mixtral-mini", out=tmp_path / "m", text=tiny_text, steps=6, batch_size=4, seq_len=16,
                    vocab_size=300, lr=3e-3, warmup_steps=2, log_every=2, ckpt_every=3, eval_batches=2,
                    progress=False, model_overrides=TINY)
        base.update(kw)
        return TrainConfig(**base)

    return make
