"""Envelope encryption of session snapshots and the passphrase export format."""

from __future__ import annotations

import dataclasses

import pytest

from zapgate.sessions.export_file import ExportFileError, open_export, seal_export
from zapgate.sessions.vault import Keyring, MasterKey, Undecryptable, seal

OWNER = "acme/shop"
IMAGE = b"SQLite format 3\x00" + bytes(range(256)) * 40


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


def test_round_trip_and_fresh_nonces(master: MasterKey) -> None:
    ring = Keyring(master)
    first, second = seal(master, OWNER, 1, IMAGE), seal(master, OWNER, 1, IMAGE)
    assert ring.open(OWNER, first) == IMAGE
    assert first.ciphertext[:12] != second.ciphertext[:12]
    assert first.wrapped_key[:12] != second.wrapped_key[:12]
    assert IMAGE[:64] not in first.ciphertext
    assert first.key_id == master.key_id
    assert master.secret.hex() not in repr(first)


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: dataclasses.replace(
            s, ciphertext=s.ciphertext[:-1] + bytes([s.ciphertext[-1] ^ 1])
        ),
        lambda s: dataclasses.replace(s, ciphertext=s.ciphertext[: len(s.ciphertext) // 2]),
        lambda s: dataclasses.replace(s, ciphertext=s.ciphertext[:5]),
        lambda s: dataclasses.replace(s, wrapped_key=s.wrapped_key[:-1] + b"\x00"),
        lambda s: dataclasses.replace(s, generation=s.generation + 1),
    ],
    ids=["flipped-bit", "truncated", "stub", "bad-wrapped-key", "relabelled-generation"],
)
def test_any_alteration_is_undecryptable(master: MasterKey, damage: object) -> None:
    sealed = seal(master, OWNER, 3, IMAGE)
    with pytest.raises(Undecryptable):
        Keyring(master).open(OWNER, damage(sealed))  # type: ignore[operator]


def test_a_blob_of_another_instance_does_not_open(master: MasterKey) -> None:
    sealed = seal(master, "acme/other", 1, IMAGE)
    with pytest.raises(Undecryptable, match="another instance"):
        Keyring(master).open(OWNER, sealed)


def test_wrong_master_key(master: MasterKey) -> None:
    sealed = seal(master, OWNER, 1, IMAGE)
    with pytest.raises(Undecryptable, match="not configured"):
        Keyring(MasterKey.generate()).open(OWNER, sealed)
    impostor = MasterKey.generate()
    forged = dataclasses.replace(sealed, key_id=impostor.key_id)
    with pytest.raises(Undecryptable):
        Keyring(impostor).open(OWNER, forged)


def test_rewrap_moves_to_the_new_key_and_keeps_the_body(master: MasterKey) -> None:
    new = MasterKey.generate()
    sealed = seal(master, OWNER, 2, IMAGE)
    rewrapped = Keyring(new, [master]).rewrap(OWNER, sealed)
    assert rewrapped.key_id == new.key_id
    assert rewrapped.ciphertext == sealed.ciphertext
    assert Keyring(new).open(OWNER, rewrapped) == IMAGE
    with pytest.raises(Undecryptable):
        Keyring(master).open(OWNER, rewrapped)


def test_master_keys_must_be_256_bits() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey(b"short")


def test_export_round_trip_and_wrong_passphrase() -> None:
    data = seal_export(IMAGE, {"instance_id": "shop"}, "correct horse")
    assert open_export(data, "correct horse") == ({"instance_id": "shop"}, IMAGE)
    with pytest.raises(ExportFileError, match="wrong passphrase"):
        open_export(data, "battery staple")
    tampered = data.replace(b'"shop"', b'"spoof"')
    with pytest.raises(ExportFileError):
        open_export(tampered, "correct horse")
    with pytest.raises(ExportFileError, match="not a"):
        open_export(b"garbage", "x")
