"""Opaque, tamper-evident cursors for member listings.

A member cursor is the dense id of the last member returned, bound to its segment by a
short digest and base64url-encoded. The digest catches edited, truncated or borrowed
cursors (a cursor of another segment); it is an integrity check, not a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from audience_manager.catalog.errors import InvalidInput

__all__ = ["decode_member_cursor", "encode_member_cursor"]

_VERSION = b"m1"
_DIGEST_SIZE = 8
_LENGTH = len(_VERSION) + 8 + _DIGEST_SIZE


def _digest(segment_id: str, position: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=b"am-members")
    digest.update(segment_id.encode())
    digest.update(position)
    return digest.digest()


def encode_member_cursor(segment_id: str, dense: int) -> str:
    """The cursor of the page after the member with dense id ``dense``."""
    position = dense.to_bytes(8, "big")
    raw = _VERSION + position + _digest(segment_id, position)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_member_cursor(segment_id: str, cursor: str) -> int:
    """The dense id a cursor of ``segment_id`` points after; ``InvalidInput`` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    position = raw[len(_VERSION) : len(_VERSION) + 8]
    if (
        len(raw) != _LENGTH
        or not raw.startswith(_VERSION)
        or raw[-_DIGEST_SIZE:] != _digest(segment_id, position)
    ):
        raise InvalidInput.at("cursor", "not a cursor this listing returned")
    return int.from_bytes(position, "big")
