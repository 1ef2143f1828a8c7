"""rollback, pin, unpin and status on real folders and config files (no server needed here;
tests/test_rollout_live.py runs them against a running server)."""

from __future__ import annotations

import json
import os
import time

import pytest

from imgclf import contract
from imgclf.model_store import LocalModelStore
from imgclf.rollout import cli
from imgclf.rollout.pinning import read_models_config, write_models_config
from imgclf.rollout.publish import PublishError, rollback
from imgclf.serving.config import read_model_server_config
from conftest import free_port


def stage_folder(store, marker: str, report: dict | None = None, seal: bool = True):
    """A staged folder (no real model: nothing here loads it), sealed unless told."""
    staged = store.stage()
    (staged / contract.SAVED_MODEL_FILE).write_text(marker)
    if report is not None:
        extra = staged / contract.ASSETS_EXTRA_DIR
        extra.mkdir()
        (extra / contract.REPORT_FILE).write_text(json.dumps(report))
    if seal:
        store.seal(staged)
    return staged


def publish_folder(store, marker: str, report: dict | None = None) -> int:
    return store.publish(stage_folder(store, marker, report))


def make_old(folder, seconds: float) -> None:
    then = time.time() - seconds
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (then, then))


def rollout(command: str, models_dir, *extra: str) -> int:
    return cli.main(["--models", str(models_dir), "--model-name", "pages", *extra], command=command)


@pytest.fixture
def models_dir(tmp_path):
    return tmp_path / "models"


@pytest.fixture
def base(models_dir):
    return LocalModelStore(contract.model_base_path(models_dir, "pages"))


def test_rollback_retires_the_highest_version_and_deletes_nothing(base):
    first, second, third = (publish_folder(base, name) for name in ("a", "b", "c"))
    version, retired = rollback(base)
    assert version == third
    assert base.versions() == [first, second]
    assert (retired / contract.SAVED_MODEL_FILE).read_text() == "c"
    assert base.retired() == [(third, retired)]
    # A rolled-back number is never reused for another model.
    assert publish_folder(base, "d") > third


def test_rollback_keeps_the_last_version_unless_forced(base):
    with pytest.raises(PublishError, match="no published version"):
        rollback(base)
    only = publish_folder(base, "a")
    with pytest.raises(PublishError, match="only one"):
        rollback(base)
    assert base.versions() == [only]
    assert rollback(base, allow_last=True)[0] == only
    assert base.versions() == []


def test_rollback_command(models_dir, base, tmp_path, capsys):
    first, second = publish_folder(base, "a"), publish_folder(base, "b")
    config = ["--models-config", str(tmp_path / "models.config")]
    assert rollout("rollback", models_dir, *config) == 0
    err = capsys.readouterr().err
    assert f"rolled back version {second}" in err and f"falls back to {first}" in err
    assert "warning" not in err
    assert rollout("rollback", models_dir, *config) == 1
    assert "only one" in capsys.readouterr().err
    assert base.versions() == [first]


def test_rollback_of_a_pinned_version_warns(models_dir, base, tmp_path, capsys):
    first, second = publish_folder(base, "a"), publish_folder(base, "b")
    config = ["--models-config", str(tmp_path / "models.config")]
    assert rollout("pin", models_dir, *config, "--server", "", "--version", str(first),
                   "--canary", str(second)) == 0
    assert rollout("rollback", models_dir, *config) == 0
    assert f"version {second} can no longer be served" in capsys.readouterr().err


def test_pin_writes_a_config_both_servers_read(models_dir, base, tmp_path):
    stable, canary = publish_folder(base, "a"), publish_folder(base, "b")
    config = tmp_path / "serving" / "models.config"
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert rollout("pin", models_dir, "--models-config", str(config), "--server", unreachable,
                   "--version", str(stable), "--canary", str(canary)) == 0

    [spec] = read_model_server_config(config, models_root=models_dir)
    assert spec.name == "pages"
    assert spec.base_path == base.base.absolute()   # written as /models/pages, mapped onto MODELS
    assert spec.policy.kind == "specific" and sorted(spec.policy.versions) == [stable, canary]
    assert spec.labels == {"stable": stable, "canary": canary}

    assert rollout("unpin", models_dir, "--models-config", str(config)) == 0
    [spec] = read_model_server_config(config, models_root=models_dir)
    assert spec.policy.kind == "latest" and spec.policy.num_versions == 1 and spec.labels == {}


def test_pin_keeps_other_models_and_refuses_unknown_versions(models_dir, base, tmp_path, capsys):
    stable = publish_folder(base, "a")
    config = tmp_path / "models.config"
    other = read_models_config(config)
    entry = other.model_config_list.config.add(name="another", base_path="/models/another")
    entry.model_version_policy.all.SetInParent()
    write_models_config(config, other)
    before = config.read_text()

    assert rollout("pin", models_dir, "--models-config", str(config), "--server", "",
                   "--version", str(stable + 1)) == 1
    assert f"version {stable + 1} is not published" in capsys.readouterr().err
    assert config.read_text() == before

    assert rollout("pin", models_dir, "--models-config", str(config), "--server", "",
                   "--version", str(stable)) == 0
    specs = {s.name: s for s in read_model_server_config(config, models_root=models_dir)}
    assert specs["another"].policy.kind == "all"
    assert specs["pages"].labels == {"stable": stable}


def test_pin_refuses_a_config_file_it_cannot_parse(models_dir, base, tmp_path, capsys):
    stable = publish_folder(base, "a")
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { nme: 'x' } }")
    assert rollout("pin", models_dir, "--models-config", str(config), "--server", "",
                   "--version", str(stable)) == 1
    assert "not a text-format ModelServerConfig" in capsys.readouterr().err
    assert "nme" in config.read_text()


def test_status_lists_every_folder_with_labels_and_recorded_accuracy(models_dir, base, tmp_path, capsys):
    old = publish_folder(base, "a", {"splits": {"test": {"accuracy": 0.91, "count": 10}}})
    new = publish_folder(base, "b", {"splits": {"test": {"accuracy": 0.955, "count": 10}}})
    retired_version, retired = rollback(base)
    staged = stage_folder(base, "c")
    killed = stage_folder(base, "d", seal=False)
    make_old(killed, 7200)
    config = tmp_path / "models.config"
    rollout("pin", models_dir, "--models-config", str(config), "--server", "", "--version", str(old))
    capsys.readouterr()
    unreachable = f"http://127.0.0.1:{free_port()}"

    assert rollout("status", models_dir, "--models-config", str(config), "--server", unreachable,
                   "--docker-service", "") == 0
    text = capsys.readouterr().out
    assert f"specific [{old}]" in text
    assert f"{old}  published" in text and "stable" in text and "0.9100" in text
    assert f"{new}  retired" in text and "0.9550" in text and retired.name in text
    assert staged.name in text and "staged" in text and "complete, not published" in text
    assert killed.name in text and "incomplete" in text and "unchanged 2.0 h" in text and "make clean-staged" in text
    assert f"server {unreachable}: not reachable" in text

    assert rollout("status", models_dir, "--models-config", str(config), "--server", unreachable,
                   "--docker-service", "", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["rows"]
    rows = {(r["on_disk"], r["version"]): r for r in listed}
    assert rows[("published", old)]["labels"] == ["stable"]
    assert rows[("retired", retired_version)]["accuracy"] == 0.955
    staged_rows = {r["folder"]: r for r in listed if r["on_disk"] == "staged"}
    assert staged_rows[str(staged)]["sealed"] is True and staged_rows[str(killed)]["sealed"] is False
    assert staged_rows[str(killed)]["unchanged_seconds"] > 7100


def test_publish_command_names_what_it_cannot_publish(models_dir, base, capsys):
    assert rollout("publish", models_dir) == 1
    assert "choose the folder to publish" in capsys.readouterr().err
    first, second = stage_folder(base, "a"), stage_folder(base, "b")
    assert rollout("publish", models_dir) == 1
    err = capsys.readouterr().err
    assert str(first) in err and str(second) in err
    assert rollout("publish", models_dir, "--staged", str(base.base / ".staging-gone")) == 1
    assert "no such staged folder" in capsys.readouterr().err
    assert base.versions() == []


def test_publish_command_never_publishes_an_empty_or_incomplete_folder_even_forced(models_dir, base, capsys):
    """Rows 14 and 15 of the hardening issue: FORCE overrides the accuracy gate, nothing else."""
    empty = base.stage()
    killed = stage_folder(base, "half", seal=False)
    for staged in (empty, killed):
        assert rollout("publish", models_dir, "--staged", str(staged), "--force") == 1
        err = capsys.readouterr().err
        assert f"{staged}: incomplete export" in err and "killed or failed" in err
    # Without STAGED=, only sealed folders are candidates; the incomplete ones are named as such.
    assert rollout("publish", models_dir, "--force") == 1
    assert "(incomplete: never publishable)" in capsys.readouterr().err
    assert base.versions() == [] and {s.path for s in base.staged()} == {empty, killed}


def test_clean_staged_removes_only_what_killed_runs_left_long_ago(models_dir, base, capsys):
    abandoned = stage_folder(base, "killed long ago", seal=False)
    make_old(abandoned, 7200)
    writing = stage_folder(base, "an export being written", seal=False)
    refused = stage_folder(base, "a candidate the gate refused")
    make_old(refused, 7200)
    published = publish_folder(base, "served")

    assert rollout("clean-staged", models_dir) == 0
    err = capsys.readouterr().err
    assert f"removed {abandoned} (incomplete" in err
    assert f"kept {writing}: changed 0 s ago" in err and f"kept {refused}: sealed" in err
    assert {s.path for s in base.staged()} == {writing, refused}

    assert rollout("clean-staged", models_dir, "--older-than", "0", "--sealed") == 0
    assert base.staged() == [] and base.versions() == [published]
