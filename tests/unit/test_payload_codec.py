"""The payload codec (config/payload_codec.py): encryption, pass-through of plaintext histories,
key rotation, clear failures, and the data converter every client and worker uses."""

from __future__ import annotations

import base64
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.converter import default
from temporalio.exceptions import ApplicationError

from cli.up import codec_endpoint, temporal_command
from config.payload_codec import (
    ENCODING,
    KEY_ID,
    EncryptionCodec,
    PayloadKeyError,
    _installation_keys,
    codec,
    data_converter,
    key_id,
    with_data_converter,
)
from config.settings import Settings

SECRET = "sk-live-very-secret-0123456789"


def _key() -> bytes:
    return secrets.token_bytes(32)


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)


def _plain(value: Any) -> Payload:
    return default().payload_converter.to_payload(value)


async def test_payloads_are_encrypted_with_a_fresh_nonce_and_decrypt_back() -> None:
    key = _key()
    c = EncryptionCodec([key])
    original = _plain({"OPENAI_API_KEY": SECRET})
    first, second = await c.encode([original, original])
    for sealed in (first, second):
        assert sealed.metadata["encoding"] == ENCODING
        assert sealed.metadata[KEY_ID] == key_id(key).encode()
        # Nothing of the plaintext survives: not the value, not the original encoding.
        assert SECRET.encode() not in sealed.SerializeToString()
        assert b"json/plain" not in sealed.SerializeToString()
    assert first.data != second.data  # a nonce per payload
    assert await c.decode([first, second]) == [original, original]


async def test_plaintext_payloads_pass_through_decode() -> None:
    """Histories recorded before encryption (or with it off) keep replaying."""
    plain = [_plain("hello"), _plain({"a": 1}), _plain(None)]
    assert await EncryptionCodec([_key()]).decode(plain) == plain


async def test_with_encryption_off_nothing_new_is_encrypted_but_old_payloads_still_open() -> None:
    key = _key()
    sealed = await EncryptionCodec([key]).encode([_plain(SECRET)])
    off = EncryptionCodec([key], encrypt=False)
    assert await off.encode([_plain(SECRET)]) == [_plain(SECRET)]
    assert await off.decode(sealed) == [_plain(SECRET)]


async def test_a_rotated_key_still_decrypts_what_it_wrote(tmp_path: Path) -> None:
    old, new = _key(), _key()
    before = await codec(_settings(tmp_path, payload_key=_b64(old))).encode([_plain(SECRET)])
    rotated = codec(_settings(tmp_path, payload_key=_b64(new), payload_old_keys=_b64(old)))
    assert rotated.current_key_id == key_id(new)
    assert await rotated.decode(before) == [_plain(SECRET)]
    after = await rotated.encode([_plain(SECRET)])
    assert after[0].metadata[KEY_ID] == key_id(new).encode()  # new writes use the new key


async def test_an_unknown_key_id_fails_clearly(tmp_path: Path) -> None:
    lost = _key()
    sealed = await EncryptionCodec([lost]).encode([_plain(SECRET)])
    with pytest.raises(PayloadKeyError) as err:
        await codec(_settings(tmp_path, payload_key=_b64(_key()))).decode(sealed)
    assert key_id(lost) in str(err.value)
    assert "AINTANDEM_PAYLOAD_OLD_KEYS" in str(err.value)


async def test_an_altered_payload_is_refused() -> None:
    key = _key()
    (sealed,) = await EncryptionCodec([key]).encode([_plain(SECRET)])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadKeyError, match="failed authentication"):
        await EncryptionCodec([key]).decode([tampered])


def test_keys_must_be_aes_256() -> None:
    with pytest.raises(ValueError):
        EncryptionCodec([])
    with pytest.raises(ValueError):
        EncryptionCodec([b"short"])
    with pytest.raises(ValueError, match="32 bytes"):
        _settings(Path("/nonexistent"), payload_key=_b64(b"x" * 16)).payload_keys()


def test_the_generated_key_is_created_once_and_shared_by_every_process(tmp_path: Path) -> None:
    """API and worker of one `aintandem up` read the same data dir: same key, kept private."""
    first = codec(_settings(tmp_path)).current_key_id
    assert codec(_settings(tmp_path)).current_key_id == first
    assert (tmp_path / "payload_key").stat().st_mode & 0o777 == 0o600


async def test_the_data_converter_encrypts_values_and_failure_messages(tmp_path: Path) -> None:
    dc = data_converter(_settings(tmp_path))
    payloads = await dc.encode([{"env": {"TOKEN": SECRET}}])
    assert SECRET.encode() not in payloads[0].SerializeToString()
    assert await dc.decode(payloads, [dict]) == [{"env": {"TOKEN": SECRET}}]
    # Failure messages (e.g. a command's stderr) go into an encrypted payload, not plain text.
    failure = Failure()
    await dc.encode_failure(ApplicationError(f"echo {SECRET}: exit 1"), failure)
    assert SECRET.encode() not in failure.SerializeToString()
    decoded = await dc.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == f"echo {SECRET}: exit 1"


async def test_with_data_converter_keeps_the_connection_and_namespace(tmp_path: Path) -> None:
    settings = _settings(tmp_path)

    class _Service:  # stands in for a connection: never called here
        pass

    plain = Client(_Service(), namespace="ns1")  # type: ignore[arg-type]
    wrapped = with_data_converter(plain, settings)
    assert wrapped.service_client is plain.service_client
    assert wrapped.namespace == "ns1"
    codec_ = wrapped.data_converter.payload_codec
    assert isinstance(codec_, EncryptionCodec)
    assert codec_.current_key_id == codec(settings).current_key_id


def test_up_points_the_temporal_ui_at_the_codec_server(tmp_path: Path) -> None:
    settings = _settings(tmp_path, api_port=8123)
    cmd = temporal_command(settings)
    endpoint = cmd[cmd.index("--ui-codec-endpoint") + 1]
    assert endpoint == codec_endpoint(settings) == "http://127.0.0.1:8123/api/v1/codec"
    assert "--ui-codec-endpoint" not in temporal_command(settings, headless=True)
    public = _settings(tmp_path, public_url="https://agents.example.com/")
    assert codec_endpoint(public) == "https://agents.example.com/api/v1/codec"


def test_a_key_file_being_written_by_another_process_is_waited_for(tmp_path: Path) -> None:
    """API and worker start together on one data dir: one creates the file, then writes it."""
    key = _key()
    (tmp_path / "payload_key").touch()  # created, not yet written
    writer = threading.Timer(0.2, (tmp_path / "payload_key").write_text, [_b64(key)])
    writer.start()
    try:
        assert codec(_settings(tmp_path)).current_key_id == key_id(key)
    finally:
        writer.join()


def test_an_empty_key_file_nobody_writes_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "payload_key").touch()
    with pytest.raises(ValueError, match="32 bytes"):
        _installation_keys(_settings(tmp_path), wait=0.1)
