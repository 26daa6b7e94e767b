"""The store of signing keys and issued credentials (services/auth/store.py): issuing touches only
the identity's own files, revoking covers every key an identity was issued (from any process),
credentials carry their expiry, and a store of the previous layout (one ``issued.json``) keeps
working."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path

import msgspec
import nkeys
import pytest

from fleetward.services.auth import jwt
from fleetward.services.auth import store as store_module
from fleetward.services.auth.store import AuthStore, Issued, is_expired
from fleetward.services.errors import FleetwardError


def key_of(creds: Path) -> str:
    """The user public key of a credentials file."""
    return str(jwt.claims(jwt.creds_jwt(creds.read_text()))["sub"])


def revocations(store: AuthStore) -> dict[str, int]:
    """The revocations in the store's signed account JWT (what the server enforces)."""
    return dict(jwt.claims(store.account_jwt())["nats"].get("revocations", {}))


def test_issuing_writes_only_the_identitys_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holds: with other identities issued, issuing one more writes its key list and its
    credentials file, nothing shared (no file that grows with the number of identities)."""
    store = AuthStore(tmp_path / "auth").init()
    for i in range(20):
        store.issue(f"a-{i}")
    written: list[Path] = []
    real_write = store_module._write

    def spy(path: Path, text: str, mode: int = 0o600) -> None:
        written.append(path)
        real_write(path, text, mode)

    monkeypatch.setattr(store_module, "_write", spy)
    path = store.issue("user:alice")
    assert written == [store.root / "issued" / "users" / "alice.json", path]
    assert path == store.root / "creds" / "users" / "alice.creds"
    assert not (store.root / "issued.json").exists()


def test_revoking_covers_every_key_of_the_identity_and_nobody_else(tmp_path: Path) -> None:
    """Holds: revoke signs the account with every key issued to that identity (as revoked since
    now), keeps earlier revocations, and leaves other identities' keys alone; ensure() then
    issues a fresh credential; revoking a stranger is an error."""
    store = AuthStore(tmp_path / "auth").init()
    first, second = key_of(store.issue("a-1")), key_of(store.issue("a-1"))
    other = store.issue("a-2")
    before = int(time.time())
    store.revoke("a-1")
    assert set(revocations(store)) == {first, second}
    assert all(since >= before for since in revocations(store).values())
    assert store.is_revoked(store.creds_path("a-1"))
    assert not store.is_revoked(other)
    assert key_of(store.ensure("a-1")) not in {first, second}
    assert store.ensure("a-2") == other  # untouched
    store.revoke("a-2")
    assert set(revocations(store)) == {first, second, key_of(other)}
    assert AuthStore(store.root).is_revoked(other)  # a new process reads it from the files
    with pytest.raises(FleetwardError, match="no credentials were issued to 'a-3'"):
        store.revoke("a-3")


def _issue_many(root: str, worker: int, count: int) -> None:
    store = AuthStore(Path(root))
    for i in range(count):
        store.issue("a-shared")
        store.issue(f"a-w{worker}-{i}")


def test_concurrent_issuers_lose_no_key(tmp_path: Path) -> None:
    """Holds: processes issuing at once (to one shared identity and to their own) lose no key:
    revoking the shared identity revokes every credential any of them issued to it."""
    store = AuthStore(tmp_path / "auth").init()
    workers, each = 3, 15
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_issue_many, args=(str(store.root), w, each)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    shared = msgspec.json.decode((store.root / "issued/agents/a-shared.json").read_bytes())
    assert len(set(shared["keys"])) == workers * each
    store.revoke("a-shared")
    assert set(revocations(store)) == set(shared["keys"])
    assert len(list((store.root / "issued" / "agents").glob("a-w*.json"))) == workers * each


def test_credentials_carry_their_expiry(tmp_path: Path) -> None:
    """Holds: ``expires_s`` sets the JWT's ``exp`` (rounded up: at least that long); 0 means
    none; a negative one is refused; ensure() replaces an expired credential."""
    store = AuthStore(tmp_path / "auth").init()
    now = time.time()
    path = store.issue("a-1", expires_s=60)
    exp = jwt.claims(jwt.creds_jwt(path.read_text()))["exp"]
    assert now + 60 <= exp <= now + 62
    assert not is_expired(path)
    assert is_expired(path, margin_s=120)
    forever = store.issue("a-2")
    assert "exp" not in jwt.claims(jwt.creds_jwt(forever.read_text()))
    assert not is_expired(forever, margin_s=10**9)
    with pytest.raises(ValueError, match="expires_s"):
        store.issue("a-3", expires_s=-1)
    # an expired credential (signed as issue() would, an hour ago): ensure() issues a new one
    user = jwt.new_key(nkeys.PREFIX_BYTE_USER)
    token = jwt.encode(jwt.public(user), "a-1", {"type": "user"}, user, exp=int(now) - 3600)
    path.write_text(jwt.creds_file(token, user))
    assert is_expired(path)
    renewed = store.ensure("a-1")
    assert not is_expired(renewed)
    assert key_of(renewed) != jwt.public(user)


def old_layout(root: Path) -> tuple[AuthStore, Path, Path]:
    """A store as the previous version left it: keys, an account JWT that revokes ``a-gone``,
    and one ``issued.json`` (no ``issued/``, no ``revoked.json``). Returns the store and copies
    of the credentials of ``a-gone`` (revoked) and ``a-old`` (valid), as their holders keep them."""
    store = AuthStore(root).init()
    gone, kept = root.parent / "a-gone.creds", root.parent / "a-old.creds"
    shutil.copyfile(store.issue("a-gone"), gone)
    shutil.copyfile(store.issue("a-old"), kept)
    since = int(time.time())
    store._sign_account({key_of(gone): since})
    shutil.rmtree(root / "issued")
    (root / "revoked.json").unlink()
    old = Issued(keys={"a-gone": [key_of(gone)], "a-old": [key_of(kept)]},
                 revoked={key_of(gone): since})  # fmt: skip
    (root / "issued.json").write_bytes(msgspec.json.encode(old))
    return AuthStore(root), gone, kept


def test_a_store_of_the_previous_layout_is_migrated_on_first_use(tmp_path: Path) -> None:
    """Holds: a store with one ``issued.json`` keeps working: its revocations still hold, the
    keys it issued are revoked with those issued since, and the file is moved aside
    (``issued.json.migrated``) once, on first use."""
    store, gone, kept = old_layout(tmp_path / "auth")
    assert store.is_revoked(gone)  # the first use migrates
    assert not store.is_revoked(kept)
    assert not (store.root / "issued.json").exists()
    assert (store.root / "issued.json.migrated").exists()
    newer = store.issue("a-old")
    assert set(revocations(store)) == {key_of(gone)}
    store.revoke("a-old")
    assert set(revocations(store)) == {key_of(gone), key_of(kept), key_of(newer)}
    assert store.is_revoked(kept) and store.is_revoked(newer) and store.is_revoked(gone)


def test_a_migration_cut_short_runs_again_and_loses_nothing(tmp_path: Path) -> None:
    """Holds: per-identity files written by a migration that stopped before moving
    ``issued.json`` aside are merged with it, not duplicated or dropped."""
    store, gone, kept = old_layout(tmp_path / "auth")
    partial = store.root / "issued" / "agents" / "a-old.json"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(msgspec.json.encode({"keys": [key_of(kept)]}))
    newer = store.issue("a-old")  # migrates first
    keys = msgspec.json.decode(partial.read_bytes())["keys"]
    assert keys == [key_of(kept), key_of(newer)]
    store.revoke("a-old")
    assert set(revocations(store)) == {key_of(gone), key_of(kept), key_of(newer)}
