"""The local server's allocator: jemalloc where installed (--allocator auto), by re-executing itself
once before TensorFlow is imported; glibc's malloc when asked (system)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgclf.serving import LocalServer
from imgclf.serving.allocator import DEFAULT_CONF, AllocatorError, environment_for, find_jemalloc
from serving_models import export_toy_model

LIBRARY = "libjemalloc.so.2"


def test_auto_takes_jemalloc_where_installed_and_goes_on_without_it():
    environment = environment_for("auto", {"PATH": "/bin"}, LIBRARY)
    assert environment == {"PATH": "/bin", "LD_PRELOAD": LIBRARY, "MALLOC_CONF": DEFAULT_CONF}
    assert environment_for("auto", {"PATH": "/bin"}, None) is None


def test_a_process_already_under_jemalloc_or_asked_for_the_system_allocator_goes_on_as_it_is():
    assert environment_for("auto", {"LD_PRELOAD": f"/usr/lib/{LIBRARY}"}, LIBRARY) is None
    assert environment_for("jemalloc", {"LD_PRELOAD": LIBRARY}, None) is None
    assert environment_for("system", {}, LIBRARY) is None


def test_other_preloads_and_the_users_jemalloc_settings_are_kept():
    environment = environment_for("jemalloc", {"LD_PRELOAD": "libfoo.so", "MALLOC_CONF": "narenas:2"}, LIBRARY)
    assert environment["LD_PRELOAD"] == f"libfoo.so {LIBRARY}" and environment["MALLOC_CONF"] == "narenas:2"


def test_jemalloc_required_and_missing_says_how_to_install_it():
    with pytest.raises(AllocatorError, match="apt-get install libjemalloc2"):
        environment_for("jemalloc", {}, None)
    with pytest.raises(AllocatorError, match="choose one of auto, jemalloc, system"):
        environment_for("tcmalloc", {}, LIBRARY)


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(find_jemalloc() is None, reason="libjemalloc2 is not installed")
@pytest.mark.parametrize("choice", ["auto", "system"])
def test_the_live_server_runs_under_the_allocator_chosen(tmp_path, choice):
    export_toy_model(tmp_path, 1)
    with LocalServer(tmp_path, "toy", extra_args=[f"--allocator={choice}"]) as server:
        pid = server.process.pid            # the same process after the re-execution
        in_use = "jemalloc" if choice == "auto" else "system"
        assert ("libjemalloc" in mapped_libraries(pid)) == (choice == "auto")
        assert f"Memory allocator: {in_use}" in server.log_path.read_text()
        assert server.process.poll() is None


def test_a_preload_the_loader_cannot_honour_is_reported_as_the_system_allocator(tmp_path, monkeypatch):
    """LD_PRELOAD naming a jemalloc that is not there: no re-execution loop, and the log says what
    the process really allocates with."""
    export_toy_model(tmp_path, 1)
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc-not-installed.so.9")
    with LocalServer(tmp_path, "toy") as server:
        assert "libjemalloc" not in mapped_libraries(server.process.pid)
        assert "Memory allocator: system" in server.log_path.read_text()
