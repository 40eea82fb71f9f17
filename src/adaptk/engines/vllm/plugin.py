"""The ``vllm.general_plugins`` entry point (pyproject.toml): vLLM calls ``register()`` in its API
server, EngineCore and worker processes, possibly more than once. It does nothing unless
``ADAPTK_POLICY`` or ``ADAPTK_MONITOR`` is set (``config``); then it installs ``hooks``."""

from __future__ import annotations

from adaptk.engines.vllm.config import from_env


def register() -> None:
    cfg = from_env()
    if not cfg.enabled:
        return
    from adaptk.engines.vllm import hooks  # imports vLLM

    hooks.install(cfg)
