"""Runs `zapgate serve` as a real child process and follows its log."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"zapgate listening on [\d.]+:(\d+)")
HTTP_LISTENING = re.compile(r"HTTP \(Connect, gRPC-Web\) on https?://[\d.]+:(\d+)")


class ServerProcess:
    def __init__(self, data_dir: Path, *extra: str, start_timeout: float = 90) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zapgate.gateway.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                "--runtime-dir",
                str(data_dir.parent / "runtime"),
                "--log-level",
                "DEBUG",
                *(extra or ("--engine", "sim", "--engine-workers", "1")),
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        # Generous by default: a start on a loaded shared machine can take long (it only
        # guards against hangs).
        try:
            self.port = int(self.wait_for(LISTENING, start_timeout).group(1))
            self.http_port = int(self.wait_for(HTTP_LISTENING).group(1))
        except BaseException:
            self.close()  # no server left running behind a failed start
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 30) -> re.Match[str]:
        """Blocks until a log line matches (a generous timeout only guards against hangs)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.log.append(line)
            if match := regex.search(line):
                return match
        raise AssertionError(f"no log line matched {regex.pattern!r}:\n{''.join(self.log)}")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        """Kills the server if it still runs and releases its pipe."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._pump_thread.join()
        assert self.process.stderr is not None
        self.process.stderr.close()


def zapgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the `zapgate` command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "zapgate.gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
