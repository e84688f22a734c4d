"""Encryption of Temporal payloads (AES-256-GCM), shared by every client and worker.

Workflow inputs, activity arguments and results, signals, updates, queries, memos and failure
messages are stored by Temporal in workflow histories, which anyone who reaches the Temporal
server (`temporal workflow show`) or its UI (no login of its own) can read. A sandbox's
environment variables and a workspace's literal provider key travel in them, so every client
and worker encodes payloads with `EncryptionCodec` before they leave the process. Operators
still read decoded histories: the API serves Temporal's codec-server protocol to admins
(`api/routers/codec.py`), which the Temporal UI and CLI call.

Lives in `config` so the API and the worker both import it without pulling in each other's
dependencies (only `temporalio` and `cryptography`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Sequence

import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from config.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
CIPHER = "encryption-cipher"
CIPHER_NAME = b"AES-256-GCM"
_NONCE_BYTES = 12


class PayloadKeyError(ValueError):
    """An encrypted payload that no configured key can open: the message says which key id it
    needs, so an operator knows which old key to put back into AINTANDEM_PAYLOAD_OLD_KEYS."""


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (never the key): names it in payload metadata."""
    return hashlib.sha256(key).hexdigest()[:16]


class EncryptionCodec(temporalio.converter.PayloadCodec):
    """AES-256-GCM over the whole serialized payload (metadata included, so the original
    encoding is hidden too), a fresh random nonce per payload, the key id in the outer metadata.

    `keys[0]` encrypts; every key decrypts, so a rotated-out key stays in `keys` until the
    histories it wrote are gone. Payloads that are not encrypted pass through `decode`
    unchanged: histories recorded before encryption was enabled keep replaying. With
    `encrypt=False` nothing new is encrypted, but what was encrypted still decodes.
    """

    def __init__(self, keys: Sequence[bytes], *, encrypt: bool = True) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        for key in keys:
            if len(key) != 32:
                raise ValueError("an AES-256 key is exactly 32 bytes")
        self.encrypting = encrypt
        self.current_key_id = key_id(keys[0])
        self._current = AESGCM(keys[0])
        # First one wins on a (practically impossible) fingerprint clash: the current key.
        self._by_id: dict[str, AESGCM] = {}
        for key in keys:
            self._by_id.setdefault(key_id(key), AESGCM(key))

    @property
    def key_ids(self) -> list[str]:
        return list(self._by_id)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encode_sync(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decode_sync(payloads)

    def encode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.encrypting:
            return list(payloads)
        out = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = self._current.encrypt(nonce, payload.SerializeToString(), None)
            out.append(
                Payload(
                    metadata={
                        "encoding": ENCODING,
                        KEY_ID: self.current_key_id.encode(),
                        CIPHER: CIPHER_NAME,
                    },
                    data=nonce + sealed,
                )
            )
        return out

    def decode_sync(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._open(p) for p in payloads]

    def _open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # plaintext: recorded before encryption, or never encrypted
        kid = payload.metadata.get(KEY_ID, b"").decode("ascii", "replace")
        cipher = self._by_id.get(kid)
        if cipher is None:
            raise PayloadKeyError(
                f"Temporal payload encrypted with key id {kid!r}, which is not one of this "
                f"installation's payload keys ({', '.join(self._by_id)}): add the key it was "
                "written with to AINTANDEM_PAYLOAD_OLD_KEYS"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadKeyError(
                f"Temporal payload with key id {kid!r} failed authentication: it was altered "
                "or is not an AInTandem payload"
            ) from None
        return Payload.FromString(plain)


def codec(settings: Settings) -> EncryptionCodec:
    """The installation's codec: its current key (configured or generated once into the data
    dir) encrypts when `payload_encryption` is on; it and the old keys decrypt."""
    return EncryptionCodec(_installation_keys(settings), encrypt=settings.payload_encryption)


def _installation_keys(settings: Settings, wait: float = 5.0) -> list[bytes]:
    """`settings.payload_keys()`, waiting out the one race it has: the process that generates
    the key file creates it (exclusively) and then writes it, so an API and a worker starting
    together on one data dir (compose without AINTANDEM_PAYLOAD_KEY) may read it empty."""
    deadline = time.monotonic() + wait
    generated = settings.data_dir / "payload_key"
    while True:
        try:
            return settings.payload_keys()
        except ValueError:
            configured = (
                settings.payload_key is not None and settings.payload_key.get_secret_value()
            )
            being_written = generated.exists() and not generated.read_text().strip()
            if configured or not being_written or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def data_converter(
    settings: Settings, payload_codec: EncryptionCodec | None = None
) -> temporalio.converter.DataConverter:
    """Temporal's default JSON conversion, then encryption. Failure messages and stack traces
    are moved into an (encrypted) payload too: an error can quote a secret (a command's stderr,
    a provider's reply), and Temporal otherwise stores them as plain text."""
    return dataclasses.replace(
        temporalio.converter.default(),
        payload_codec=payload_codec or codec(settings),
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )


def with_data_converter(client: Client, settings: Settings) -> Client:
    """`client`'s connection and namespace with the installation's data converter: whoever built
    the client (a test's dev server, a benchmark), the worker and its activities encode exactly
    as the API does."""
    config = client.config()
    config["data_converter"] = data_converter(settings)
    return Client(**config)
