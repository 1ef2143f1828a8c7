"""The model store on a real filesystem: staging, sealing, publishing, retiring and locking, with
real concurrent processes and real crashes (SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from imgclf import contract
from imgclf.model_store import IncompleteExport, LocalModelStore, StoreError, open_model, open_store

# Each child stages, seals and publishes `count` models, writing who made each into the folder.
PUBLISHER = textwrap.dedent("""
    import json, sys
    from imgclf.model_store import open_store
    store, who, count = open_store(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    sys.stdin.readline()  # start together
    versions = []
    for i in range(count):
        staged = store.stage()
        (staged / "saved_model.pb").write_text(f"{who}-{i}")
        store.seal(staged)
        versions.append(store.publish(staged))
    print(json.dumps(versions))
""")

# Stages a model, then keeps writing its variables until killed: a trainer dying mid-export.
CRASHER = textwrap.dedent("""
    import sys
    from imgclf.model_store import open_store
    staged = open_store(sys.argv[1]).stage()
    (staged / "saved_model.pb").write_bytes(b"graph")
    (staged / "variables").mkdir()
    with open(staged / "variables" / "variables.data-00000-of-00001", "wb") as out:
        print(staged, flush=True)
        while True:
            out.write(b"x" * 65536)
""")

# Takes the store's lock and dies holding it.
LOCK_HOLDER = textwrap.dedent("""
    import sys
    from imgclf.model_store import open_store
    with open_store(sys.argv[1]).lock():
        print("locked", flush=True)
        sys.stdin.readline()
""")


def sealed(store, content: bytes = b"graph", extra: dict | None = None):
    """A staged, sealed export holding a saved_model.pb (and extra files: relative path -> bytes)."""
    staged = store.stage()
    (staged / contract.SAVED_MODEL_FILE).write_bytes(content)
    for name, data in (extra or {}).items():
        (staged / name).parent.mkdir(parents=True, exist_ok=True)
        (staged / name).write_bytes(data)
    store.seal(staged)
    return staged


def test_only_integer_folder_names_are_versions(tmp_path):
    for name in ["0042", "7", "1700000000", ".staging-1-2", "1700000000.partial", "abc", "-3"]:
        (tmp_path / name).mkdir()
    (tmp_path / "99").write_text("a file, not a folder")
    assert LocalModelStore(tmp_path).versions() == [7, 42, 1700000000]
    assert LocalModelStore(tmp_path / "missing").versions() == []


def test_retired_and_staged_folders_are_listed_and_invisible_as_versions(tmp_path):
    (tmp_path / contract.retired_name(12, at=99)).mkdir()
    (tmp_path / contract.staging_name("x")).mkdir()
    store = LocalModelStore(tmp_path)
    assert store.versions() == []
    assert [v for v, _ in store.retired()] == [12]
    [staged] = store.staged()
    assert staged.path.name == ".staging-x" and not staged.sealed and staged.age() < 60


def test_stage_makes_an_empty_invisible_unique_folder(tmp_path):
    store = open_model(tmp_path / "models", "m")
    first, second = store.stage(), store.stage()
    assert first != second
    assert first.parent == tmp_path / "models" / "m" and list(first.iterdir()) == []
    assert [s.path for s in store.staged()] == sorted([first, second])
    assert store.versions() == []


def test_publish_renames_a_sealed_export_to_the_next_version(tmp_path):
    store = LocalModelStore(tmp_path / "m")
    (tmp_path / "m" / "1700000000").mkdir(parents=True)
    staged = sealed(store, b"model", {"variables/variables.index": b"index"})
    marker = json.loads((staged / contract.ASSETS_EXTRA_DIR / contract.SEAL_FILE).read_text())
    assert marker["files"] == {"saved_model.pb": 5, "variables/variables.index": 5}
    version = store.publish(staged)
    assert version > 1700000000
    assert store.versions() == [1700000000, version] and store.latest() == version
    assert (store.version_path(version) / "saved_model.pb").read_bytes() == b"model"
    assert not staged.exists() and store.staged() == []


def test_the_next_version_never_reuses_a_retired_number(tmp_path):
    store = LocalModelStore(tmp_path)
    future = int(time.time()) + 500
    (tmp_path / contract.retired_name(future)).mkdir()
    assert store.publish(sealed(store)) == future + 1


def test_an_empty_or_modelless_folder_cannot_be_sealed(tmp_path):
    store = LocalModelStore(tmp_path)
    empty = store.stage()
    with pytest.raises(IncompleteExport, match="no saved_model.pb"):
        store.seal(empty)
    (empty / "variables").mkdir()
    (empty / "variables" / "variables.index").write_bytes(b"x")
    with pytest.raises(IncompleteExport, match="no saved_model.pb"):
        store.seal(empty)
    assert store.versions() == []


def test_publish_refuses_an_unsealed_export(tmp_path):
    store = LocalModelStore(tmp_path)
    staged = store.stage()
    (staged / "saved_model.pb").write_bytes(b"graph")
    with pytest.raises(IncompleteExport, match="incomplete export"):
        store.publish(staged)
    assert store.versions() == [] and staged.is_dir()


@pytest.mark.parametrize("change", ["remove", "truncate", "add"])
def test_publish_refuses_an_export_whose_files_changed_after_sealing(tmp_path, change):
    store = LocalModelStore(tmp_path)
    staged = sealed(store, extra={"variables/variables.data-00000-of-00001": b"w" * 100})
    weights = staged / "variables" / "variables.data-00000-of-00001"
    if change == "remove":
        weights.unlink()
    elif change == "truncate":
        weights.write_bytes(b"w" * 10)
    else:
        (staged / "variables" / "stray").write_bytes(b"")
    with pytest.raises(IncompleteExport, match="changed since the export was sealed"):
        store.publish(staged)
    assert store.versions() == []


def test_publish_refuses_missing_numeric_or_foreign_folders(tmp_path):
    store = LocalModelStore(tmp_path / "m")
    with pytest.raises(StoreError, match="no such staged folder"):
        store.publish(tmp_path / "m" / ".staging-missing")
    numeric = tmp_path / "123"
    numeric.mkdir()
    with pytest.raises(StoreError, match="version number"):
        store.publish(numeric)
    elsewhere = tmp_path / ".staging-elsewhere"
    elsewhere.mkdir()
    with pytest.raises(StoreError, match="stage inside the base path"):
        store.publish(elsewhere)
    assert store.versions() == []


def test_retire_and_discard(tmp_path):
    store = LocalModelStore(tmp_path)
    first, second = store.publish(sealed(store, b"a")), store.publish(sealed(store, b"b"))
    retired = store.retire(second)
    assert store.versions() == [first] and store.retired() == [(second, retired)]
    assert (retired / "saved_model.pb").read_bytes() == b"b"
    with pytest.raises(StoreError, match="not published"):
        store.retire(second)
    # A version published before exports were sealed is sealed when retired: it may come back.
    (tmp_path / "1600000000").mkdir()
    (tmp_path / "1600000000" / "saved_model.pb").write_bytes(b"old")
    store.retire(1600000000)
    [(_, old)] = [r for r in store.retired() if r[0] == 1600000000]
    assert store.publish(old) > second
    staged = sealed(store)
    store.discard(staged)
    assert not staged.exists() and store.staged() == []
    with pytest.raises(StoreError, match="not a staged folder"):
        store.discard(retired)


def test_only_local_folders_are_stores(tmp_path):
    assert isinstance(open_store(f"file://{tmp_path}"), LocalModelStore)
    with pytest.raises(StoreError, match="no model store for s3://"):
        open_store("s3://bucket/models/m")


def test_two_concurrent_publishers_get_distinct_increasing_versions(tmp_path):
    base = tmp_path / "m"
    count = 15
    children = [
        subprocess.Popen([sys.executable, "-c", PUBLISHER, str(base), who, str(count)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for who in ("a", "b")
    ]
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    results = {}
    for who, child in zip(("a", "b"), children):
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        results[who] = json.loads(out)

    store = LocalModelStore(base)
    for who, versions in results.items():
        assert versions == sorted(versions) and len(set(versions)) == count
        for i, version in enumerate(versions):
            assert (store.version_path(version) / "saved_model.pb").read_text() == f"{who}-{i}"
    everything = results["a"] + results["b"]
    assert len(set(everything)) == 2 * count
    assert store.versions() == sorted(everything)
    assert store.staged() == []


def test_crash_before_seal_leaves_an_unpublishable_staged_folder(tmp_path):
    base = tmp_path / "m"
    child = subprocess.Popen([sys.executable, "-c", CRASHER, str(base)], stdout=subprocess.PIPE, text=True)
    staged_line = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    store = LocalModelStore(base)
    assert store.versions() == []
    [left] = store.staged()
    assert str(left.path) == staged_line and not left.sealed   # kept for inspection
    with pytest.raises(IncompleteExport):
        store.publish(left.path)
    # Publishing still works after the crash.
    version = store.publish(sealed(store))
    assert store.versions() == [version]


def lock_is_free(base) -> bool:
    """Whether another thread can take the store's lock right now (flock is per open file, so a
    thread of this process contends like another process would)."""
    taken = threading.Event()

    def take():
        with LocalModelStore(base).lock():
            taken.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(timeout=2)
    return taken.is_set()


def test_the_lock_excludes_others_is_reentrant_and_dies_with_its_holder(tmp_path):
    base = tmp_path / "m"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(base)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert not lock_is_free(base)
    holder.kill()
    holder.wait(timeout=30)
    assert lock_is_free(base)

    store = LocalModelStore(base)
    with store.lock():
        version = store.publish(sealed(store))   # takes the lock again: re-entrant
        assert not lock_is_free(base)
    assert lock_is_free(base)
    assert store.versions() == [version]


def test_staged_age_follows_the_newest_change_inside(tmp_path):
    store = LocalModelStore(tmp_path)
    staged = store.stage()
    (staged / "variables").mkdir()
    deep = staged / "variables" / "data"
    deep.write_bytes(b"x")
    old = time.time() - 7200
    for path in (deep, staged / "variables", staged):
        os.utime(path, (old, old))
    assert store.staged()[0].age() > 7100
    deep.write_bytes(b"xy")   # a running export writes deep inside: the folder is young again
    assert store.staged()[0].age() < 60
