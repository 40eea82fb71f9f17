"""Serve a patched MoE model on 127.0.0.1 with Prometheus routing metrics beside it.

    python examples/serve_metrics.py                     # tiny random Mixtral, adaptive top-p
    python examples/serve_metrics.py --model default     # adaptk's shipped default model
    curl -s -X POST localhost:8000/score -d '{"text": "def f(x): return x"}'
    curl -s localhost:8000/metrics | grep adaptk_routing

Endpoints (stdlib http.server, loopback only):

- ``POST /score``  body ``{"text": "..."}`` or ``{"input_ids": [..]}`` -> mean next-token loss
- ``POST /generate`` same body plus ``"max_new_tokens"`` (<= 64) -> greedy continuation ids
- ``GET /metrics`` Prometheus text exposition of the routing monitor (its own registry)
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

import adaptk
from adaptk.monitor import RoutingMonitor
from adaptk.monitor.exporters import PrometheusCollector

log = logging.getLogger("serve_metrics")
MAX_BODY = 1 << 20
MAX_TOKENS = 2048
MAX_NEW_TOKENS = 64


def tiny_mixtral() -> torch.nn.Module:
    """A tiny random Mixtral (no download), for trying the server out."""
    import transformers

    cfg = transformers.MixtralConfig(vocab_size=256, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=8,
                                     num_experts_per_tok=2, max_position_embeddings=MAX_TOKENS)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.normal_(0, 0.5)
    return model


class App:
    """The model, its tokenizer (or a byte fallback), the monitor and the metrics registry."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, policy: adaptk.Policy | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.patch = adaptk.patch(model, policy) if policy is not None else None
        self.monitor = RoutingMonitor(window_tokens=512).attach(model)
        self.metrics = PrometheusCollector(self.monitor)
        self.lock = threading.Lock()  # one forward at a time on this small example

    def encode(self, body: dict) -> list[int]:
        if "input_ids" in body:
            ids = [int(i) for i in body["input_ids"]]
        elif "text" in body and self.tokenizer is not None:
            ids = self.tokenizer(str(body["text"]), add_special_tokens=False)["input_ids"]
        elif "text" in body:
            ids = list(str(body["text"]).encode("utf-8"))  # byte fallback for the tiny model
        else:
            raise ValueError("send {'text': ...} or {'input_ids': [...]}")
        vocab = self.model.config.vocab_size
        if not ids or len(ids) > MAX_TOKENS or min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"need 1..{MAX_TOKENS} token ids in [0, {vocab})")
        return ids

    def score(self, body: dict) -> dict:
        ids = torch.tensor([self.encode(body)])
        with self.lock, torch.no_grad():
            out = self.model(input_ids=ids, labels=ids if ids.shape[1] > 1 else None)
        loss = float(out.loss) if out.loss is not None else None
        return {"tokens": ids.shape[1], "loss": loss}

    def generate(self, body: dict) -> dict:
        ids = torch.tensor([self.encode(body)])
        n = min(int(body.get("max_new_tokens", 8)), MAX_NEW_TOKENS)
        with self.lock, torch.no_grad():
            for _ in range(max(n, 0)):
                nxt = self.model(input_ids=ids).logits[:, -1].argmax(dim=-1, keepdim=True)
                ids = torch.cat([ids, nxt], dim=1)
        return {"input_ids": ids[0].tolist()}

    def close(self) -> None:
        self.monitor.detach()
        if self.patch is not None:
            self.patch.unpatch()


def make_handler(app: App):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                self._send(200, app.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802
            routes = {"/score": app.score, "/generate": app.generate}
            if self.path not in routes:
                self._send(404, b'{"error": "not found"}')
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                if not 0 < length <= MAX_BODY:
                    raise ValueError(f"body must be 1..{MAX_BODY} bytes")
                result = routes[self.path](json.loads(self.rfile.read(length)))
                self._send(200, json.dumps(result).encode())
            except (ValueError, TypeError, KeyError) as exc:
                self._send(400, json.dumps({"error": str(exc)}).encode())

        def log_message(self, fmt: str, *args) -> None:
            log.debug(fmt, *args)

    return Handler


def make_server(app: App, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 (``port=0``: a free port; read ``server.server_address``)."""
    return ThreadingHTTPServer(("127.0.0.1", port), make_handler(app))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (random), 'default', or a model folder")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--top-p", type=float, default=0.7, help="adaptive top-p policy (1.0 = native routing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    tokenizer = None
    if args.model == "tiny":
        model = tiny_mixtral()
    else:
        from pathlib import Path

        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(adaptk.__file__).parent / "assets" / "default-model" if args.model == "default" else args.model
        model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    policy = adaptk.TopP(args.top_p) if args.top_p < 1.0 else None
    app = App(model, tokenizer, policy)
    server = make_server(app, args.port)
    log.info("serving on http://127.0.0.1:%d (POST /score, POST /generate, GET /metrics)", server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()


if __name__ == "__main__":
    main()
