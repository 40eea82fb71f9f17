"""examples/serve_metrics.py end to end on 127.0.0.1: 3 requests, then /metrics moved."""

import importlib.util
import json
import threading
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_metrics.py"


def load_example():
    spec = importlib.util.spec_from_file_location("serve_metrics", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tokens_total(metrics: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("adaptk_routing_tokens_total{"))


def test_serve_and_scrape():
    import adaptk

    ex = load_example()
    app = ex.App(ex.tiny_mixtral(), policy=adaptk.TopP(0.7))
    server = ex.make_server(app, port=0)
    host, port = server.server_address
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        def post(path, body):
            req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        def metrics():
            with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
                return r.read().decode()

        before = tokens_total(metrics())
        assert post("/score", {"text": "hello routing"})["tokens"] == 13
        assert post("/score", {"input_ids": [1, 2, 3, 4]})["loss"] is not None
        assert len(post("/generate", {"input_ids": [5, 6], "max_new_tokens": 2})["input_ids"]) == 4
        after = metrics()
        assert before == 0 and tokens_total(after) > 0
        assert "adaptk_routing_entropy_nats{" in after and "adaptk_routing_average_k{" in after
        with pytest.raises(urllib.error.HTTPError):
            post("/score", {"input_ids": [10**6]})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        app.close()
    assert not thread.is_alive()
