"""Serve a patched MoE model on 127.0.0.1 with Prometheus routing metrics beside it.

    python examples/serve_metrics.py                     # tiny random Mixtral, adaptive top-p
    python examples/serve_metrics.py --model default     # adaptk's shipped default model
    curl -s -X POST localhost:8000/score -d '{"text": "def f(x): return x"}'
    curl -s localhost:8000/metrics | grep adaptk_routing

Endpoints (stdlib http.server, loopback only):

- ``POST /score``  body ``{"text": "..."}`` or ``{"input_ids": [..]}`` -> mean next-token loss
- ``POST /generate`` same body plus ``"max_new_tokens"`` (<= 64) -> greedy continuation ids
- ``GET /metrics`` Prometheus text exposition of the routing monitor (its own registry)

Requests are validated with pydantic (``ScoreRequest``/``GenerateRequest``: strict JSON types,
no unknown keys, 1..2048 token ids within the vocabulary, ``max_new_tokens`` 0..64). A body
must declare its ``Content-Length`` (411 otherwise), at most ``MAX_BODY`` bytes (413), and
arrive within ``read_timeout`` seconds (408). Bad requests get 400 with a short, fixed message;
nothing of Python's own error text is ever sent back (500 "internal error", logged here).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

import adaptk
from adaptk.monitor import RoutingMonitor
from adaptk.monitor.exporters import PrometheusCollector

log = logging.getLogger("serve_metrics")
MAX_BODY = 1 << 20
MAX_TOKENS = 2048
MAX_NEW_TOKENS = 64
MAX_TEXT_CHARS = 16 * MAX_TOKENS
READ_TIMEOUT_S = 10.0  # the whole body must arrive within this


class BadRequest(Exception):
    """A request the server answers with ``status`` and a fixed ``message`` (never Python text)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class ScoreRequest(BaseModel):
    """``{"text": str}`` or ``{"input_ids": [int, ...]}``: exactly one, strict JSON types."""

    model_config = ConfigDict(strict=True, extra="forbid")
    text: StrictStr | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    input_ids: list[StrictInt] | None = Field(None, min_length=1, max_length=MAX_TOKENS)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("exactly one of text and input_ids")
        return self


class GenerateRequest(ScoreRequest):
    max_new_tokens: StrictInt = Field(8, ge=0, le=MAX_NEW_TOKENS)


# resolve the (string) annotations here: a module loaded from its file path is not in sys.modules
ScoreRequest.model_rebuild()
GenerateRequest.model_rebuild()

_USAGE = {
    ScoreRequest: f'send {{"text": "..."}} or {{"input_ids": [int, ...]}} (1..{MAX_TOKENS} ids)',
    GenerateRequest: f'send {{"text": "..."}} or {{"input_ids": [int, ...]}} (1..{MAX_TOKENS} ids), '
                     f'optional "max_new_tokens": an integer 0..{MAX_NEW_TOKENS}',
}


def parse_request(raw: bytes, schema: type[ScoreRequest]) -> ScoreRequest:
    """Validate a JSON body against ``schema``; ``BadRequest(400)`` with a fixed message naming
    the offending field of the schema (no Python or pydantic text)."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"] and e["loc"][0] in schema.model_fields})
        where = f"bad {', '.join(fields)}: " if fields else "invalid request: "
        raise BadRequest(400, where + _USAGE[schema]) from None


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

    @property
    def max_positions(self) -> int:
        return min(MAX_TOKENS, int(getattr(self.model.config, "max_position_embeddings", None) or MAX_TOKENS))

    def encode(self, req: ScoreRequest, extra: int = 0) -> list[int]:
        """Token ids of a validated request: within the vocabulary, and ``extra`` more still fit."""
        if req.input_ids is not None:
            ids = req.input_ids
        elif self.tokenizer is not None:
            ids = self.tokenizer(req.text, add_special_tokens=False)["input_ids"]
        else:
            ids = list(req.text.encode("utf-8"))  # byte fallback for the tiny model
        vocab, limit = self.model.config.vocab_size, self.max_positions - extra
        if not ids or len(ids) > limit:
            raise BadRequest(400, f"need 1..{limit} tokens")
        if min(ids) < 0 or max(ids) >= vocab:
            raise BadRequest(400, f"token ids must lie in [0, {vocab})")
        return ids

    def score(self, raw: bytes) -> dict:
        ids = torch.tensor([self.encode(parse_request(raw, ScoreRequest))])
        with self.lock, torch.no_grad():
            out = self.model(input_ids=ids, labels=ids if ids.shape[1] > 1 else None)
        loss = float(out.loss) if out.loss is not None else None
        return {"tokens": ids.shape[1], "loss": loss}

    def generate(self, raw: bytes) -> dict:
        req = parse_request(raw, GenerateRequest)
        n = req.max_new_tokens
        ids = torch.tensor([self.encode(req, extra=n)])
        with self.lock, torch.no_grad():
            for _ in range(n):
                nxt = self.model(input_ids=ids).logits[:, -1].argmax(dim=-1, keepdim=True)
                ids = torch.cat([ids, nxt], dim=1)
        return {"input_ids": ids[0].tolist()}

    def close(self) -> None:
        self.monitor.detach()
        if self.patch is not None:
            self.patch.unpatch()


def make_handler(app: App, read_timeout: float = READ_TIMEOUT_S):
    class Handler(BaseHTTPRequestHandler):
        timeout = read_timeout  # socket timeout of every read, idle keep-alive included

        def _read_body(self) -> bytes:
            """The body, bounded in size (413) and in total read time (408), declared length (411)."""
            declared = self.headers.get("Content-Length")
            if declared is None:
                raise BadRequest(411, "send a Content-Length header")
            try:
                length = int(declared)
            except ValueError:
                raise BadRequest(400, "bad Content-Length header") from None
            if length > MAX_BODY:
                raise BadRequest(413, f"body over {MAX_BODY} bytes")
            if length < 1:
                raise BadRequest(400, "empty body")
            deadline, chunks, left = time.monotonic() + read_timeout, [], length
            while left:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BadRequest(408, "body not received in time")
                self.connection.settimeout(remaining)
                try:
                    chunk = self.rfile.read1(left)
                except TimeoutError:
                    raise BadRequest(408, "body not received in time") from None
                if not chunk:
                    raise BadRequest(400, "body shorter than its Content-Length")
                chunks.append(chunk)
                left -= len(chunk)
            self.connection.settimeout(read_timeout)
            return b"".join(chunks)

        def _error(self, code: int, message: str) -> None:
            self.close_connection = True  # the rest of a bad request's bytes are not read
            self._send(code, json.dumps({"error": message}).encode())

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
                self._error(404, "not found")
                return
            try:
                result = routes[self.path](self._read_body())
            except BadRequest as exc:
                self._error(exc.status, exc.message)
                return
            except Exception:  # a bug here, not the client's: logged, never sent back
                log.exception("request to %s failed", self.path)
                self._error(500, "internal error")
                return
            self._send(200, json.dumps(result).encode())

        def log_message(self, fmt: str, *args) -> None:
            log.debug(fmt, *args)

    return Handler


def make_server(app: App, port: int = 0, read_timeout: float = READ_TIMEOUT_S) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 (``port=0``: a free port; read ``server.server_address``);
    a request body must arrive within ``read_timeout`` seconds."""
    if not read_timeout > 0:
        raise ValueError(f"read_timeout must be > 0 seconds, got {read_timeout!r}")
    return ThreadingHTTPServer(("127.0.0.1", port), make_handler(app, read_timeout))


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
