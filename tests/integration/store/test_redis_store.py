"""The Redis state store against a real server: lost replies, restarts, secrets, key layout."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import valkey
from services.valkey import ValkeyService

from audience_manager.backends import open_backends
from audience_manager.config import Settings
from audience_manager.store import ChangeRecord, ProfileWrite, StateCommit, StoreUnavailable
from audience_manager.store.redis import RedisStateStore


@pytest.fixture
def prefix(valkey_server: ValkeyService) -> Iterator[str]:
    with valkey_server.prefix() as prefix:
        yield prefix


@pytest.fixture
def store(valkey_server: ValkeyService, prefix: str) -> Iterator[RedisStateStore]:
    opened = RedisStateStore(valkey_server.url, prefix=prefix)
    yield opened
    opened.close()


def batch(seq: int, users: range, segment: str) -> StateCommit:
    """A commit writing ``users`` and moving them into ``segment``."""
    return StateCommit(
        {0: seq},
        seq,
        [ProfileWrite(d, f"u{d}", msgspec.json.encode({"n": seq})) for d in users],
        enters={segment: list(users)},
        applied=len(users),
        changes=[ChangeRecord(segment, f"u{d}", d, "enter", seq) for d in users],
    )


def state(store: RedisStateStore) -> tuple[object, ...]:
    return (
        store.positions(),
        store.sizes(),
        sorted(store.bitmap("s")),
        sorted(store.users()),
        store.profile("u7"),
        store.user_segments("u7"),
        store.members("s", None, 5),
        store.applied(),
        store.changes_since(0),
        [(e.positions, e.now) for e in store.journal()],
    )


class ReplyDropper:
    """A TCP proxy to the server that, once armed, passes the next ``EXEC`` on and then
    closes the client's connection as the server's answer to it arrives: the transaction
    ran, and the client cannot know."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = 0
        self.threads = [threading.Thread(target=self._accept)]
        self.threads[0].start()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for thread in self.threads:
            thread.join()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            sent = threading.Event()
            for pump in (
                threading.Thread(target=self._requests, args=(client, server, sent)),
                threading.Thread(target=self._replies, args=(server, client, sent)),
            ):
                self.threads.append(pump)
                pump.start()

    def _requests(
        self, client: socket.socket, server: socket.socket, sent: threading.Event
    ) -> None:
        tail = b""
        try:
            while data := client.recv(1 << 16):
                server.sendall(data)
                tail = (tail + data)[-6:]
                if tail == b"EXEC\r\n" and self.armed.is_set():
                    self.armed.clear()
                    sent.set()
        except OSError:
            pass
        finally:
            for end in (client, server):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def _replies(self, server: socket.socket, client: socket.socket, sent: threading.Event) -> None:
        held = b""
        try:
            while data := server.recv(1 << 16):
                if not sent.is_set():
                    client.sendall(data)
                    continue
                held += data  # replies to the queued commands, then the transaction's
                for token in (b"+OK\r\n", b"+QUEUED\r\n"):
                    while held.startswith(token):
                        client.sendall(token)
                        held = held[len(token) :]
                if held and not any(t.startswith(held) for t in (b"+OK\r\n", b"+QUEUED\r\n")):
                    self.dropped += 1
                    client.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            pass


def test_a_commit_whose_answer_was_lost_is_applied_once(
    valkey_server: ValkeyService, prefix: str
) -> None:
    port = int(valkey_server.url.rsplit(":", 1)[1])
    dropper = ReplyDropper(port)
    store = RedisStateStore(f"redis://127.0.0.1:{dropper.port}", prefix=prefix)
    try:
        store.commit(batch(1, range(10), "s"))
        dropper.armed.set()
        store.commit(batch(2, range(10, 15), "s"))
        assert dropper.dropped == 1
        assert store.applied() == 15
        assert store.sizes() == {"s": 15}
        assert store.last_change() == 15
        assert [e.now for e in store.journal()] == [1, 2]
    finally:
        store.close()
        dropper.close()


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill-9"])
def test_a_restart_keeps_every_commit_and_fails_fast_meanwhile(
    valkey_server: ValkeyService, store: RedisStateStore, kill: bool
) -> None:
    store.commit(batch(1, range(10), "s"))
    store.commit(StateCommit({0: 2}, 2, [ProfileWrite(3, "u3", None)], exits={"s": [4]}))
    store.submit("count", b"{}")
    before = state(store)
    with valkey_server.down(kill=kill):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.sizes()
        with pytest.raises(StoreUnavailable):
            store.commit(batch(3, range(10, 20), "s"))
        assert time.monotonic() - started < 5
    assert state(store) == before
    assert len(store.pending()) == 1
    store.commit(batch(3, range(10, 20), "s"))
    assert store.sizes() == {"s": 18}


def test_a_server_busy_with_a_script_is_unavailable(
    valkey_server: ValkeyService, store: RedisStateStore
) -> None:
    with valkey.Valkey.from_url(valkey_server.url) as admin:
        threshold = admin.config_get("busy-reply-threshold")["busy-reply-threshold"]
        admin.config_set("busy-reply-threshold", 20)
        try:
            with valkey.Valkey.from_url(valkey_server.url) as busy:
                runner = threading.Thread(target=_spin, args=(busy,))
                runner.start()
                while not _busy(admin):
                    time.sleep(0.01)
                try:
                    with pytest.raises(StoreUnavailable, match="BUSY"):
                        store.sizes()
                finally:
                    admin.script_kill()
                    runner.join()
        finally:
            admin.config_set("busy-reply-threshold", threshold)
    assert store.sizes() == {}


def _busy(client: valkey.Valkey) -> bool:
    try:
        client.ping()
    except valkey.ResponseError as error:
        return str(error).startswith("BUSY")
    return False


def _spin(client: valkey.Valkey) -> None:
    with contextlib.suppress(valkey.ResponseError):  # killed
        client.eval("while true do end", 0)


def test_the_password_stays_out_of_repr_and_errors() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    store = RedisStateStore(f"redis://app:s3cret@127.0.0.1:{port}/0?password=s3cret")
    try:
        assert repr(store) == f"RedisStateStore('redis://app:***@127.0.0.1:{port}/0', prefix='am')"
        with pytest.raises(StoreUnavailable) as failed:
            store.sizes()
        assert "s3cret" not in str(failed.value)
    finally:
        store.close()


def test_valkey_urls_open_the_same_store(valkey_server: ValkeyService, prefix: str) -> None:
    url = valkey_server.url.replace("redis://", "valkey://", 1)
    with_valkey = RedisStateStore(url, prefix=prefix)
    with_redis = RedisStateStore(valkey_server.url, prefix=prefix)
    try:
        with_valkey.commit(batch(1, range(3), "s"))
        assert with_redis.sizes() == {"s": 3}
    finally:
        with_valkey.close()
        with_redis.close()


def test_a_commit_releases_the_commit_lock_in_its_transaction(
    valkey_server: ValkeyService, store: RedisStateStore, prefix: str
) -> None:
    first = batch(1, range(10), "s")
    store.commit(first)
    store.commit(first)  # in already: nothing written, the lock let go all the same
    with valkey.Valkey.from_url(valkey_server.url) as client:
        assert client.exists(f"{{{prefix}}}:commit-lock") == 0
    assert store.applied() == 10


def test_a_lock_left_by_a_holder_that_died_holds_commits_until_it_expires(
    valkey_server: ValkeyService, store: RedisStateStore, prefix: str
) -> None:
    with valkey.Valkey.from_url(valkey_server.url) as client:
        client.set(f"{{{prefix}}}:commit-lock", "a processor gone", px=500)
    started = time.monotonic()
    store.commit(batch(1, range(10), "s"))
    assert time.monotonic() - started >= 0.4
    assert store.sizes() == {"s": 10}


def test_commits_of_two_processors_at_once_never_start_again(
    valkey_server: ValkeyService, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit lock keeps a commit from overlapping another: none is aborted by WATCH,
    so none repeats its reads and its pipeline."""
    aborted = []
    transaction = RedisStateStore._transaction

    def counted(self: RedisStateStore, *args: object) -> bool:
        try:
            return transaction(self, *args)  # type: ignore[arg-type]
        except valkey.WatchError:
            aborted.append(1)
            raise

    monkeypatch.setattr(RedisStateStore, "_transaction", counted)
    stores = [RedisStateStore(valkey_server.url, prefix=prefix) for _ in range(2)]

    def commit_all(partition: int) -> None:
        for n in range(1, 41):
            users = range(partition * 100_000 + n * 50, partition * 100_000 + n * 50 + 50)
            commit = batch(n, users, f"s{partition}")
            commit.positions = {partition: n}
            commit.base = {partition: n - 1} if n > 1 else None
            stores[partition].commit(commit)

    try:
        threads = [threading.Thread(target=commit_all, args=(p,)) for p in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert stores[0].positions() == {0: 40, 1: 40}
        assert stores[0].sizes() == {"s0": 2_000, "s1": 2_000}
        assert aborted == []
    finally:
        for opened in stores:
            opened.close()


def test_every_key_carries_the_hash_tag(valkey_server: ValkeyService) -> None:
    url = f"{valkey_server.url}/7"  # a database of its own
    store = RedisStateStore(url, prefix="tagged")
    try:
        store.commit(batch(1, range(200), "s"))
        store.commit(StateCommit({0: 2}, 2, [ProfileWrite(3, "u3", None)], replaced={"t": [1]}))
        store.respond(store.submit("count", b"{}"), b"1")
        with valkey.Valkey.from_url(url) as client:
            keys = [k.decode() for k in client.scan_iter(count=1_000)]
            client.flushdb()
        assert len(keys) > 5
        assert all(k.startswith("{tagged}:") for k in keys), keys
    finally:
        store.close()


def test_a_state_url_opens_the_redis_store(
    valkey_server: ValkeyService, prefix: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, state_url=valkey_server.url, state_prefix=prefix)
    backends = open_backends(settings)
    try:
        assert repr(backends.store) == f"RedisStateStore({valkey_server.url!r}, prefix={prefix!r})"
        backends.store.commit(batch(1, range(3), "s"))
        assert backends.store.sizes() == {"s": 3}
    finally:
        backends.close()
    assert not settings.state_dir.exists()
