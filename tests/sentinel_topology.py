"""A Redis Sentinel deployment on loopback, from the same redis-server binary as
every other test (``redis-server sentinel.conf --sentinel``), so CI needs no apt:
one master, one replica (or more), three Sentinels, AOF ``always`` on every data
server.

Sentinel is tuned to fail over within a few seconds: the master is down after
2 s of silence. Not 1 s: a Sentinel reconnects to an instance at most once per
second (its ping period), so right after a failover it can miss a 1 s deadline
on the new master it has not reached yet, and fail over a second time (seen
with Redis 7: what the first new master took then was thrown away).

A Sentinel can only promote a replica it has seen, and it finds the replica
through the master's INFO and its peers through hello messages, up to 10 s
after start; ``ready()`` waits until every Sentinel lists both, so a kill never
lands in that window. Every wait is bounded.

With ``tls`` every server also listens with TLS (a redis-server built with it,
such as Debian's) and replicates and gossips over it; clients are then given
only the TLS ports, and the plain ones are kept for this module's probes."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import redis

from raptorflow_bus import keys
from raptorflow_bus.embedded import redis_server_binary
from tests.faults.processes import RedisServer, wait_for
from tests.ports import unused_port

MASTER_NAME = "raptorbus"
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 3000
READY_SECONDS = 30.0


@dataclass(frozen=True)
class Tls:
    """A test CA and one certificate for 127.0.0.1, and the TLS-capable binary."""

    binary: str
    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        return [
            "tls-cert-file", str(self.cert),
            "tls-key-file", str(self.key),
            "tls-ca-cert-file", str(self.ca),
            "tls-auth-clients", "no",
            "tls-replication", "yes",
        ]  # fmt: skip

    def query(self) -> str:
        return urlencode({"ssl_cert_reqs": "required", "ssl_ca_certs": str(self.ca)})


def tls_binary() -> str | None:
    """``RAPTORBUS_REDIS_SERVER`` or the one on the PATH, if built with TLS."""
    candidates = [redis_server_binary(), shutil.which("redis-server")]
    for binary in filter(None, candidates):
        # Without cert files a TLS build refuses the TLS port; others the directive.
        probe = subprocess.run(
            [binary, "--port", "0", "--tls-port", "1"], capture_output=True, text=True, timeout=10
        )
        if "Bad directive" not in probe.stdout + probe.stderr:
            return binary
    return None


def make_tls(home: Path, binary: str) -> Tls:
    """A CA and a certificate it signed for 127.0.0.1, made with openssl."""
    home.mkdir(parents=True, exist_ok=True)
    ca, ca_key = home / "ca.crt", home / "ca.key"
    cert, key, request = home / "redis.crt", home / "redis.key", home / "redis.csr"
    san = home / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [
        ["req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2",
         "-subj", "/CN=raptorbus-test-ca", "-keyout", str(ca_key), "-out", str(ca)],
        ["req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(request)],
        ["x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(san), "-out", str(cert)],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(["openssl", *step], check=True, capture_output=True, timeout=60)
    return Tls(binary, ca, cert, key)


class DataServer(RedisServer):
    """The master or the replica; ``replica_of`` (a port clients are served on)
    only at first start: after a failover the Sentinels decide who replicates
    whom."""

    def __init__(self, home: Path, replica_of: int | None = None, tls: Tls | None = None) -> None:
        super().__init__(home)
        self.replica_of = replica_of
        self.tls = tls
        self.tls_port = unused_port() if tls else None

    def command(self) -> list[str]:
        cmd = super().command()
        if self.tls is not None:
            cmd[0] = self.tls.binary
            cmd += ["--tls-port", str(self.tls_port)]
            cmd += [
                f"--{arg}" if n % 2 == 0 else arg for n, arg in enumerate(self.tls.server_args())
            ]
        if self.replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return cmd

    @property
    def serving_port(self) -> int:
        """The port clients, replicas and Sentinels use."""
        return self.tls_port or self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.serving_port}"

    def role(self) -> str:
        with self.client(1.0) as client:
            return str(client.info("replication")["role"])

    def follows(self, master: DataServer) -> bool:
        """Whether this server is a replica of ``master`` with its link up."""
        with self.client(1.0) as client:
            info = client.info("replication")
        return (
            info["role"] == "slave"
            and info.get("master_link_status") == "up"
            and int(info.get("master_port", 0)) == master.serving_port
        )

    def refused_writes(self) -> int:
        """Writes refused because this server is a replica (READONLY)."""
        with self.client() as client:
            errors = client.info("errorstats")
        return int(errors.get("errorstat_READONLY", {}).get("count", 0))

    def other_clients(self) -> int:
        """Clients connected other than the Sentinels and this probe."""
        with self.client() as client:
            return sum(
                1
                for c in client.client_list()
                if "N" in c["flags"]
                and not c["name"].startswith("sentinel-")
                and c["cmd"] not in ("client", "client|list")
            )

    def holds_what(self, master: DataServer) -> bool:
        """Whether this replica holds exactly what ``master`` does once it has
        caught up: nothing was written to it alone. The reaper lock comes and
        goes by expiry, so it is left out."""
        lock = keys.REAPER_LOCK.encode()
        with master.client() as source, self.client() as replica:
            source.execute_command("WAIT", 1, 2000)
            same_keys = set(source.keys()) - {lock} == set(replica.keys()) - {lock}
            return same_keys and source.hgetall(keys.METRICS) == replica.hgetall(keys.METRICS)


class SentinelServer:
    def __init__(
        self, home: Path, master_port: int, password: str | None, tls: Tls | None = None
    ) -> None:
        self.home = home
        self.port = unused_port()
        self.password = password
        self.tls = tls
        self.tls_port = unused_port() if tls else None
        self.process: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {home}",
            f"logfile {home / 'sentinel.log'}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if password:
            lines.append(f"requirepass {password}")
        if tls is not None:
            lines.append(f"tls-port {self.tls_port}")
            args = tls.server_args()
            lines += [f"{name} {value}" for name, value in zip(args[::2], args[1::2], strict=True)]
        # Sentinel rewrites its own file (what it learnt, the current master).
        self.config = home / "sentinel.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def client(self) -> redis.Redis[bytes]:
        return redis.Redis("127.0.0.1", self.port, password=self.password, socket_timeout=2.0)

    def start(self) -> None:
        binary = self.tls.binary if self.tls else redis_server_binary()
        self.process = subprocess.Popen(
            [binary, str(self.config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self.client() as probe:
            if wait_for(lambda: bool(probe.ping()), 30) is None:
                self.stop()
                raise RuntimeError(f"sentinel did not start; see {self.home / 'sentinel.log'}")

    def knows(self, wanted: list[str], peers: int) -> bool:
        """Whether this Sentinel lists every one of ``wanted`` (up, in sync
        with the master) and ``peers`` other Sentinels."""
        with self.client() as client:
            listed = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            sentinels = client.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
        up = {
            f"{r['ip']}:{r['port']}"
            for r in map(_fields, listed)
            if "s_down" not in r["flags"] and r.get("master-link-status") == "ok"
        }
        return up >= set(wanted) and len(sentinels) >= peers

    def master(self) -> str:
        with self.client() as client:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return f"{host.decode()}:{port.decode()}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


def _fields(flat: list[bytes]) -> dict[str, str]:
    items = [x.decode() for x in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


class SentinelTopology:
    """``url`` and ``master_name`` are what a bus is configured with."""

    def __init__(
        self,
        home: Path,
        replicas: int = 1,
        sentinels: int = 3,
        password: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.master = DataServer(home / "master", tls=tls)
        port = self.master.serving_port
        self.replicas = [
            DataServer(home / f"replica-{n}", replica_of=port, tls=tls) for n in range(replicas)
        ]
        self.sentinels = [
            SentinelServer(home / f"sentinel-{n}", port, password, tls) for n in range(sentinels)
        ]
        self.master_name = MASTER_NAME
        self.password = password
        self.tls = tls

    @property
    def url(self) -> str:
        if self.tls is None:
            return ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels)
        query = self.tls.query()
        return ";".join(f"sentinel://127.0.0.1:{s.tls_port}?{query}" for s in self.sentinels)

    def start(self) -> SentinelTopology:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        return self.ready()

    def ready(self) -> SentinelTopology:
        """Wait until the replicas are in sync and every Sentinel lists them and
        its peers: only then can a failover happen."""
        peers = len(self.sentinels) - 1
        wanted = [r.address for r in self.replicas]

        def known() -> bool:
            return all(s.knows(wanted, peers) for s in self.sentinels)

        if wait_for(known, READY_SECONDS, every=0.2) is None:
            raise RuntimeError(f"the Sentinels did not see the replicas within {READY_SECONDS} s")
        return self

    def server(self, address: str) -> DataServer:
        return next(s for s in [self.master, *self.replicas] if s.address == address)

    def current_master(self) -> str:
        """The master most Sentinels name (they agree once a failover is over)."""
        names = []
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                names.append(sentinel.master())
        return max(set(names), key=names.count)

    def failed_over(self, seconds: float) -> float | None:
        """Seconds until the Sentinels name a replica as master and it says so itself."""
        replicas = {r.address for r in self.replicas}

        def promoted() -> bool:
            master = self.current_master()
            return master in replicas and self.server(master).role() == "master"

        return wait_for(promoted, seconds, every=0.1)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for replica in self.replicas:
            replica.stop()
        self.master.stop()

    def __enter__(self) -> SentinelTopology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def sentinel_topology(
    home: Path, replicas: int = 1, password: str | None = None
) -> Iterator[SentinelTopology]:
    with SentinelTopology(home, replicas, password=password) as topology:
        yield topology
