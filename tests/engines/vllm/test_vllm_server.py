"""One real server: ``adaptk serve --monitor`` on 127.0.0.1, one completion, then the adaptk pair
counters on the server's own /metrics (counted in vLLM's engine process); stopped by its PID."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from adaptk.assets import default_model_path

pytestmark = pytest.mark.vllm
START_S = 400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def test_serve_completion_and_metrics(tmp_path):
    port, model = _free_port(), str(default_model_path())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADAPTK_", "PROMETHEUS_"))}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CACHE_ROOT=str(tmp_path / "cache"), ADAPTK_METRICS_INTERVAL="0")
    adaptk = Path(sys.executable).with_name("adaptk")
    cmd = [str(adaptk), "serve", "--model", model, "--monitor", "--", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--enforce-eager", "--max-model-len", "512"]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                _get(base + "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(2)
        body = json.dumps({"model": model, "prompt": "The old man said", "max_tokens": 8, "temperature": 0})
        req = urllib.request.Request(base + "/v1/completions", body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            completion = json.loads(r.read())
        assert completion["choices"][0]["text"]
        metrics = _get(base + "/metrics")
        pairs = {}
        for m in re.finditer(r"^adaptk_expert_token_pairs_total\{([^}]*)\} (\S+)$", metrics, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))  # the label order is the exporter's
            pairs[labels["layer"], labels["kind"]] = float(m.group(2))
        assert {layer for layer, _ in pairs} == {"0", "1", "2", "3"}, metrics[-2000:]
        for layer in "0123":  # monitor only: native routing, every native pair executed
            assert pairs[layer, "executed"] == pairs[layer, "native"] > 0
        assert re.search(r'^adaptk_routing_entropy_normalized_count\{layer="0"\} [1-9]', metrics, re.M)
        assert "vllm:" in metrics  # vLLM's own metrics are still there
    finally:
        proc.send_signal(signal.SIGTERM)  # by its PID (adaptk serve became the server)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
