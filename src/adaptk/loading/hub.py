"""Is the Hugging Face hub usable right now? Offline switches, the local cache, a short probe.

Loading a hub name with no network otherwise waits on retries for about a minute before it
fails; these checks answer in at most ``PROBE_TIMEOUT_S``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.5
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"


def offline_setting(env: Mapping[str, str] | None = None) -> str | None:
    """The name of the offline variable that is set to a true value, or None."""
    env = os.environ if env is None else env
    for name in OFFLINE_VARS:
        if env.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return name
    return None


def endpoint(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(host, port) of the hub: ``$HF_ENDPOINT`` or huggingface.co:443."""
    env = os.environ if env is None else env
    url = urlparse(env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    port = url.port or (80 if url.scheme == "http" else 443)
    return url.hostname or "huggingface.co", port


def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError as exc:
        log.info("hub endpoint %s:%d not reachable: %s", host, port, exc)
        return False


def is_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id``'s config.json."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception as exc:  # an invalid id or an unreadable cache means: not usable from the cache
        log.debug("cache lookup of %s failed: %s", repo_id, exc)
        return False
