"""examples/serve_metrics.py end to end on 127.0.0.1: 3 requests, then /metrics moved; bad requests
answered with a status and a short fixed message (bounded requests and timeouts)."""

import functools
import http.client
import importlib.util
import json
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ---- bad requests: validated, bounded, answered with short fixed messages ----------------------

READ_TIMEOUT = 0.5


@functools.lru_cache(maxsize=1)
def _example():
    return load_example()


@pytest.fixture(scope="module")
def served():
    ex = load_example()
    app = ex.App(ex.tiny_mixtral())
    server = ex.make_server(app, port=0, read_timeout=READ_TIMEOUT)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield ex, app, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        app.close()


def _post(port, path, raw: bytes, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=raw, headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _raw(port, data: bytes) -> tuple[int, dict]:
    """Send raw bytes and read the response until the server closes (it does after a bad
    request); every read bounded by the socket timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _alive(port):
    assert _post(port, "/score", json.dumps({"input_ids": [1, 2, 3]}).encode())[0] == 200


def test_nested_arrays_are_a_400_not_a_dropped_connection(served):
    ex, _, port = served
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"input_ids": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        status, data = _post(port, "/score", body)
        assert status == 400 and data["error"].startswith(("invalid request: ", "bad input_ids: "))
    _alive(port)


@pytest.mark.parametrize("body,field", [
    ({"input_ids": [1], "max_new_tokens": 1e400}, "max_new_tokens"),
    ({"input_ids": [1], "max_new_tokens": 65}, "max_new_tokens"),
    ({"input_ids": [1], "max_new_tokens": -1}, "max_new_tokens"),
    ({"input_ids": [1], "max_new_tokens": True}, "max_new_tokens"),
    ({"input_ids": [1.9, True]}, "input_ids"),
    ({"input_ids": ["1"]}, "input_ids"),
    ({"input_ids": []}, "input_ids"),
    ({"input_ids": list(range(3000))}, "input_ids"),
    ({"text": 5}, "text"),
])
def test_strict_schema(served, body, field):
    ex, _, port = served
    raw = json.dumps(body).replace("Infinity", "1e400").encode()
    status, data = _post(port, "/generate", raw)
    assert status == 400
    assert data == {"error": f"bad {field}: " + ex._USAGE[ex.GenerateRequest]}


@pytest.mark.parametrize("body,message", [
    ({"input_ids": [10**6]}, "token ids must lie in [0, 256)"),
    ({"input_ids": [-1]}, "token ids must lie in [0, 256)"),
    ({"input_ids": [10**400]}, "token ids must lie in [0, 256)"),
])
def test_token_ids_within_the_vocabulary(served, body, message):
    _, _, port = served
    assert _post(port, "/score", json.dumps(body).encode()) == (400, {"error": message})


@pytest.mark.parametrize("raw", [b"{", b'{"text": "a", "input_ids": [1]}', b'{"texts": "a"}', b"{}", b"null",
                                 b'"\\ud800"', b"\xff\xfe"])
def test_malformed_bodies_get_the_fixed_usage_message(served, raw):
    ex, _, port = served
    assert _post(port, "/score", raw) == (400, {"error": "invalid request: " + ex._USAGE[ex.ScoreRequest]})


def test_body_size_and_length_are_bounded(served):
    ex, _, port = served
    head = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    status, data = _raw(port, f"{head}Content-Length: {ex.MAX_BODY + 1}\r\n\r\n".encode())
    assert status == 413 and data == {"error": f"body over {ex.MAX_BODY} bytes"}
    assert _raw(port, f"{head}\r\n".encode())[0] == 411
    assert _raw(port, f"{head}Content-Length: nope\r\n\r\n".encode())[0] == 400
    _alive(port)


def test_a_short_body_times_out_with_408_instead_of_hanging(served):
    _, _, port = served
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    status, data = _raw(port, head + b'{"input_ids": [1]}')  # 18 of 100 bytes, then silence
    assert status == 408 and data == {"error": "body not received in time"}
    _alive(port)


def test_internal_errors_do_not_leak_python_text(served, monkeypatch):
    ex, app, port = served

    def broken(raw):
        raise RuntimeError("secret /path/to/weights detail")

    monkeypatch.setattr(app, "score", broken)  # the handler looks the route up per request
    status, data = _post(port, "/score", b'{"input_ids": [1]}')
    assert status == 500 and data == {"error": "internal error"}


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["text", "input_ids", "max_new_tokens", "x"]), c, max_size=3),
                    max_leaves=12))
def test_parse_request_accepts_or_raises_bad_request_only(value):
    ex = _example()
    raw = json.dumps(value).encode()
    for schema in (ex.ScoreRequest, ex.GenerateRequest):
        try:
            req = ex.parse_request(raw, schema)
        except ex.BadRequest as exc:
            assert exc.status == 400 and exc.message.endswith(ex._USAGE[schema])
            continue
        assert (req.text is None) != (req.input_ids is None)
        assert req.input_ids is None or all(type(i) is int for i in req.input_ids)
