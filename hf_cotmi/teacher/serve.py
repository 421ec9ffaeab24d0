"""Serve a local model folder over the OpenAI API with ``transformers serve``, on 127.0.0.1, for a while.

:func:`served_by_transformers` starts ``transformers serve FOLDER`` (the ``transformers`` command of the
running Python), waits until its ``/health`` answers, yields the base URL for
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
from pathlib import Path
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
        RuntimeError: the server exited or did not answer ``/health`` within ``timeout_s``.

    Examples:
        >>> # with served_by_transformers(folder, log_path="serve.log") as url:  # http://127.0.0.1:PORT/v1
        >>> #     OpenAICompatibleBackend(url, model=folder)
    """
    port = free_local_port()
    command = [
        str(Path(sys.executable).with_name("transformers")),
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
            _wait_for_health(server, port, timeout_s, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_for_health(server: subprocess.Popen, port: int, timeout_s: float, log: IO[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            tail = log.read()[-3000:]
            state = (
                f"exited with {server.returncode}"
                if server.poll() is not None
                else f"silent for {timeout_s:.0f} s"
            )
            raise RuntimeError(f"transformers serve on 127.0.0.1:{port} did not come up ({state}):\n{tail}")
        time.sleep(0.25)
