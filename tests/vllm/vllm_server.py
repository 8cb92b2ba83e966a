"""A vLLM OpenAI-compatible server on 127.0.0.1, run from vLLM's own virtual environment.

`make test-vllm` installs vLLM's CPU build into a venv of its own (it pins its own torch and
transformers) and names its Python in ``$W2S_VLLM_PYTHON``; the tests and the client run in the
project's venv. The server runs in its own process group, so stopping it stops its engine and worker
processes too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` serving ``folder`` as ``name``, eager, one CPU core.

    Args:
        python: the vLLM venv's Python.
        folder: a safetensors model folder.
        name: the model name the server answers to.
        log: where the server's output goes (appended across restarts).
        max_model_len: the context the server allows (small: the KV cache is sized for it).
    """

    def __init__(self, python: str, folder: Path, name: str, log: Path, max_model_len: int = 1024) -> None:
        self.python, self.folder, self.name, self.log = python, folder, name, log
        self.max_model_len = max_model_len
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None
        self.startup_seconds: list[float] = []  # launch to ready, each start
        self._launched = 0.0

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.folder),
            "--served-model-name",
            self.name,
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            str(self.max_model_len),
            # vLLM 0.32's CPU build crashes its engine ("CPU Generator does not use offset") when a
            # seeded request's prompt is prefilled in chunks: prefill every prompt whole.
            "--no-enable-chunked-prefill",
            "--disable-log-stats",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def start(self, timeout: float = 300.0) -> float:
        """Start the server and wait until ``/v1/models`` answers; the seconds that took."""
        self.launch()
        return self.wait(timeout)

    def launch(self) -> None:
        """Start the server process without waiting for it (`wait` does)."""
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONWARNINGS": "ignore",
        }
        self._launched = time.monotonic()
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: engine and worker stop with it
            )

    def wait(self, timeout: float = 300.0) -> float:
        """Wait until ``/v1/models`` answers; the seconds since `launch`. RuntimeError (server stopped) if not."""
        while not self.ready():
            if (
                self.process is None
                or self.process.poll() is not None
                or time.monotonic() - self._launched > timeout
            ):
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"vLLM did not start within {timeout:.0f} s:\n{tail}")
            time.sleep(0.5)
        self.startup_seconds.append(time.monotonic() - self._launched)
        return self.startup_seconds[-1]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/models", timeout=5) as response:
                return any(m.get("id") == self.name for m in json.loads(response.read())["data"])
        except (OSError, ValueError, KeyError):
            return False

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL what is left after ``grace`` seconds."""
        if self.process is None:
            return
        process, self.process = self.process, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        # The group outlives its leader when a worker lingers: end it whole.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def restart(self, grace: float = 5.0) -> float:
        """Stop the server (killed after ``grace`` seconds: uvicorn waits for in-flight requests that a
        stopped engine never answers) and start it again on the same port; the start-up seconds."""
        self.stop(grace)
        return self.start()
