"""A private redis-server for tests that stop, restart or reconfigure Redis.

``RedisServer`` runs ``redis-server`` on a free local port with its data in a folder of
its own, and stops only the process it started.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

LOCAL_HOST = "127.0.0.1"


def redis_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return whether a Redis server at ``host:port`` replies +PONG to PING."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that no process listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCAL_HOST, 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server process owned by a test, stoppable and restartable in place.

    The port is chosen at the first start and kept across restarts, and so is the
    data folder, so an append-only file written before a stop is read at restart.
    Snapshots (RDB) are off. ``extra_args`` are further redis-server options, for
    example ``["--rename-command", "CONFIG", ""]``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
        executable: str = "redis-server",
        startup_timeout: float = 10.0,
    ) -> None:
        self.directory = Path(directory)
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available(executable: str = "redis-server") -> bool:
        """Return whether the redis-server program is on the PATH."""
        return shutil.which(executable) is not None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("The Redis server has not been started; call start().")
        return f"redis://{LOCAL_HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> None:
        """Start the server and return once it replies to PING."""
        if self.running:
            raise RuntimeError(
                f"The Redis server on port {self.port} is already running."
            )

        self.directory.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        command = [
            self.executable,
            "--port", str(self.port),
            "--bind", LOCAL_HOST,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_answering()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown) or, with ``kill``, SIGKILL."""
        process = self._process
        if process is None:
            return

        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Stop the server and start it again on the same port and data folder."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_answering(self) -> None:
        assert self._process is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {self._process.returncode} at "
                    f"start; its log is {self.log_path}:\n{self._log_tail()}"
                )
            if redis_answers(LOCAL_HOST, self.port):
                return
            time.sleep(0.02)

        self.stop(kill=True)
        raise RuntimeError(
            f"redis-server on port {self.port} did not reply to PING within "
            f"{self.startup_timeout} s; its log is {self.log_path}:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"
