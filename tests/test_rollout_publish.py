"""Staging and publishing: real folders, real concurrent processes, a real crash (SIGKILL)."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import textwrap

import pytest

from imgclf import contract
from imgclf.rollout.publish import LOCK_FILE, PublishError, publish, stage_dir

# Each child stages and publishes `count` models, writing who made each into the folder.
PUBLISHER = textwrap.dedent("""
    import json, sys
    from imgclf.rollout.publish import publish, stage_dir
    base, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.stdin.readline()  # start together
    versions = []
    for i in range(count):
        staged = stage_dir(base)
        (staged / "who.txt").write_text(f"{who}-{i}")
        versions.append(publish(staged, base))
    print(json.dumps(versions))
""")

# Stages a model, then keeps writing its variables until killed: a trainer dying mid-export.
CRASHER = textwrap.dedent("""
    import sys
    from imgclf.rollout.publish import stage_dir
    staged = stage_dir(sys.argv[1])
    (staged / "variables").mkdir()
    with open(staged / "variables" / "variables.data-00000-of-00001", "wb") as out:
        print(staged, flush=True)
        while True:
            out.write(b"x" * 65536)
""")

# Takes the publish lock and dies holding it.
LOCK_HOLDER = textwrap.dedent("""
    import sys
    from imgclf.rollout.publish import publish_lock
    with publish_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def test_stage_dir_makes_an_empty_invisible_unique_folder(tmp_path):
    base = tmp_path / "models" / "m"
    first, second = stage_dir(base), stage_dir(base)
    assert first != second
    assert first.parent == base and list(first.iterdir()) == []
    assert contract.list_staged(base) == sorted([first, second])
    assert contract.list_versions(base) == []


def test_publish_renames_to_next_version_and_keeps_contents(tmp_path):
    base = tmp_path / "m"
    (base / "1700000000").mkdir(parents=True)
    staged = stage_dir(base)
    (staged / "variables").mkdir()
    (staged / "saved_model.pb").write_bytes(b"model")
    version = publish(staged, base)
    assert version > 1700000000
    assert contract.list_versions(base) == [1700000000, version]
    assert (contract.version_path(base, version) / "saved_model.pb").read_bytes() == b"model"
    assert not staged.exists() and contract.list_staged(base) == []


def test_publish_refuses_missing_numeric_or_foreign_folders(tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    with pytest.raises(PublishError, match="no such staged folder"):
        publish(base / ".staging-missing", base)
    numeric = tmp_path / "123"
    numeric.mkdir()
    with pytest.raises(PublishError, match="version number"):
        publish(numeric, base)
    assert contract.list_versions(base) == []


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

    for who, versions in results.items():
        assert versions == sorted(versions) and len(set(versions)) == count
        for i, version in enumerate(versions):
            assert (contract.version_path(base, version) / "who.txt").read_text() == f"{who}-{i}"
    everything = results["a"] + results["b"]
    assert len(set(everything)) == 2 * count
    assert contract.list_versions(base) == sorted(everything)
    assert contract.list_staged(base) == []


def test_crash_before_rename_leaves_no_numeric_folder(tmp_path):
    base = tmp_path / "m"
    child = subprocess.Popen([sys.executable, "-c", CRASHER, str(base)], stdout=subprocess.PIPE, text=True)
    staged_line = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    assert contract.list_versions(base) == []
    assert [str(p) for p in contract.list_staged(base)] == [staged_line]  # kept for inspection
    # Publishing still works after the crash.
    staged = stage_dir(base)
    (staged / "saved_model.pb").write_bytes(b"ok")
    version = publish(staged, base)
    assert contract.list_versions(base) == [version]


def try_lock(base) -> bool:
    with open(base / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return True


def test_publish_lock_excludes_others_and_dies_with_its_holder(tmp_path):
    base = tmp_path / "m"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(base)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert not try_lock(base)
    holder.kill()
    holder.wait(timeout=30)
    assert try_lock(base)
    staged = stage_dir(base)
    assert publish(staged, base) in contract.list_versions(base)
