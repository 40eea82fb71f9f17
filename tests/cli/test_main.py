"""``adaptk`` entry point: Ctrl-C (SIGINT) exits 130 with one line on stderr, no traceback."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adaptk.cli import main as cli_main

SRC = str(Path(cli_main.__file__).resolve().parents[2])


def test_keyboard_interrupt_in_a_subcommand_exits_130_with_one_line(monkeypatch, capsys):
    import adaptk.cli.inspect as inspect_cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_cmd, "run", interrupted)
    assert cli_main.main(["inspect", "--model", "default"]) == cli_main.EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err == "adaptk inspect: interrupted\n"


def test_user_error_still_exits_2(capsys):
    assert cli_main.main(["monitor", "--model", "/nonexistent/model", "--text-file", __file__]) == 2
    assert capsys.readouterr().err.startswith("adaptk monitor: error: ")


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    return env


def _start(cmd: list[str]) -> tuple[subprocess.Popen, "queue.Queue[str]"]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    lines: queue.Queue[str] = queue.Queue()

    def pump(stream):
        for chunk in iter(lambda: stream.read(1), ""):
            lines.put(chunk)
        lines.put("")  # EOF

    threading.Thread(target=pump, args=(proc.stderr,), daemon=True).start()
    return proc, lines


def _interrupt_when(proc, chunks, ready: str, timeout: float) -> tuple[int, str]:
    """Wait (bounded) until ``ready`` appears on stderr, send SIGINT, return (rc, whole stderr)."""
    seen, deadline = "", time.monotonic() + timeout
    try:
        while ready not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                pytest.fail(f"the command did not start in {timeout:.0f} s (rc {proc.poll()}): {seen[-2000:]!r}")
            try:
                seen += chunks.get(timeout=min(left, 1.0))
            except queue.Empty:
                pass
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    while True:
        try:
            chunk = chunks.get(timeout=5)
        except queue.Empty:
            break
        if chunk == "":
            break
        seen += chunk
    return rc, seen


def test_sigint_in_a_real_process_exits_130_without_traceback(tmp_path):
    """A subcommand that blocks: SIGINT while it runs, delivered by the OS to a real process."""
    script = (
        "import sys, time\n"
        "import adaptk.cli.inspect as m\n"
        "def run(args):\n"
        "    print('started', file=sys.stderr, flush=True)\n"
        "    time.sleep(120)\n"
        "    return 0\n"
        "m.run = run\n"
        "from adaptk.cli.main import main\n"
        "sys.exit(main(['inspect', '--model', 'default']))\n"
    )
    proc, chunks = _start([sys.executable, "-c", script])
    rc, err = _interrupt_when(proc, chunks, "started\n", timeout=120)
    assert rc == 130
    assert err == "started\nadaptk inspect: interrupted\n"


@pytest.mark.slow
def test_sigint_during_monitor_exits_130_without_traceback():
    """The real ``adaptk monitor`` on the shipped model, interrupted once it writes to stderr
    (loading the weights: it is inside the subcommand by then)."""
    cmd = [sys.executable, "-m", "adaptk.cli.main", "monitor", "--model", "default", "--corpus", "stdlib"]
    proc, chunks = _start(cmd)
    rc, err = _interrupt_when(proc, chunks, "Loading", timeout=300)
    assert rc == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.rstrip("\n").splitlines()[-1].endswith("adaptk monitor: interrupted")
