"""Serve a local model folder over the OpenAI API with ``transformers serve``, on 127.0.0.1, for a while.

:func:`served_by_transformers` starts ``transformers serve FOLDER`` (the running Python's transformers, as
``python -m transformers.cli.transformers serve``), waits until its ``/health`` answers (asked directly, never
through an ``http_proxy`` of the environment), yields the base URL for
:class:`~hf_cotmi.teacher.OpenAICompatibleBackend` (``http://127.0.0.1:PORT/v1``), and stops the server when
the block ends. Tests and ``examples/benchmarks/teacher_throughput.py`` use it to talk to a real
OpenAI-compatible server without the network; it needs ``transformers[serving]``.

Examples:
    >>> # with served_by_transformers("runs/teacher", log_path="runs/serve.log") as base_url:
    >>> #     generate_rationales("inputs.jsonl", "out.jsonl", base_url=base_url, model="runs/teacher")
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import IO

__all__ = ["free_local_port", "served_by_transformers"]


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Examples:
        >>> 0 < free_local_port() < 65536
        True
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def served_by_transformers(
    folder: str | os.PathLike[str],
    *,
    log_path: str | os.PathLike[str],
    device: str = "cpu",
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``transformers serve`` on ``folder`` at 127.0.0.1 while the block runs; yield its ``/v1`` URL.

    Args:
        folder: a saved causal LM with its tokenizer.
        log_path: the server's output goes there (its tail is in the error when it does not start).
        device: ``--device`` of ``transformers serve``.
        timeout_s: how long to wait for ``/health``.
        env: the server's environment (default: this process's).

    Raises:
        RuntimeError: the server exited or did not answer ``/health`` within ``timeout_s``; the message says
            which, quotes the end of the log and says what to do.

    Examples:
        >>> # with served_by_transformers(folder, log_path="serve.log") as url:  # http://127.0.0.1:PORT/v1
        >>> #     OpenAICompatibleBackend(url, model=folder)
    """
    port = free_local_port()
    command = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(folder),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        device,
    ]
    with open(log_path, "w+", encoding="utf-8") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_for_health(server, port, timeout_s, log, folder)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# the health check goes to 127.0.0.1 itself: a proxy from http_proxy could not reach this machine's server
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _wait_for_health(
    server: subprocess.Popen, port: int, timeout_s: float, log: IO[str], folder: str | os.PathLike[str]
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with _DIRECT.open(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        returncode = server.poll()
        if returncode is not None or time.monotonic() > deadline:
            log.flush()
            log.seek(0)
            tail = log.read()[-3000:]
            state = f"exited with {returncode}" if returncode is not None else f"silent for {timeout_s:g} s"
            raise RuntimeError(
                f"transformers serve on 127.0.0.1:{port} did not come up ({state}); "
                f"{_advice(returncode, port, tail, folder)}. Its log {log.name} ends:\n{tail}"
            )
        time.sleep(0.25)


def _advice(returncode: int | None, port: int, tail: str, folder: str | os.PathLike[str]) -> str:
    """What to do about a server that did not come up, from how it ended (None: still running) and its log."""
    if returncode is None:
        return (
            "it is still loading or is stuck: give a longer timeout_s (a large model on CPU takes minutes), "
            "or read its log"
        )
    if "address already in use" in tail.lower():
        return f"another process took port {port} before the server bound it: run again (each run picks a free port)"
    return (
        f"read its log: {str(folder)!r} must be a saved causal LM with its tokenizer, and transformers serve "
        'needs pip install "transformers[serving]"'
    )
