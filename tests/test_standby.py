"""Standby sessions (--model_standby_sessions): a version of the same program as one loaded before
is restored into that version's session once nothing runs on it, and answers exactly as a version
loaded into a new session does; anything else loads anew."""

from __future__ import annotations

import gc
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf

from imgclf.polling import poll
from imgclf.serving import LocalServer
from imgclf.serving.program import program_key
from imgclf.serving.servable import Servable, read_meta_graph
from imgclf.serving.server import VersionLoader
from imgclf.serving.standby import StandbySessions
from serving_models import export_toy_model

X = {"x": np.array([[1.0, 2.0, 3.0]], np.float32)}


def key_of(version_dir: Path) -> str:
    return program_key(read_meta_graph(version_dir, ["serve"]), version_dir)


class Scaled(tf.Module):
    """y = x * scale, with the scale a constant of the graph (not a variable)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        return {"y": x * tf.constant(self.scale)}


def export_scaled(target: Path, scale: float) -> Path:
    module = Scaled(scale)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve.get_concrete_function()})
    return target


def test_the_program_key_ignores_tensorflows_counters_and_variables_but_not_constants(tmp_path):
    # Each export traces its functions anew: other numbers in every function, argument and id.
    one, two = export_toy_model(tmp_path / "toy", 1), export_toy_model(tmp_path / "toy", 2)
    assert read_meta_graph(one, ["serve"]).graph_def != read_meta_graph(two, ["serve"]).graph_def
    assert key_of(one) == key_of(two)
    assert key_of(export_scaled(tmp_path / "c" / "1", 1.0)) != key_of(export_scaled(tmp_path / "c" / "2", 2.0))
    assert key_of(export_scaled(tmp_path / "c" / "3", 1.0)) == key_of(tmp_path / "c" / "1")
    assert key_of(export_scaled(tmp_path / "c" / "4", 1.0)) != key_of(one)


def graph_calling(body_constant: float, outer_name: str, inner_name: str):
    """A GraphDef whose node calls `outer`, which names `inner` only inside a nested attribute."""
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    node = graph.node.add(name="call", op="PartitionedCall")
    node.attr["f"].func.name = outer_name
    node.attr["f"].func.attr["g"].func.name = inner_name
    for name, value in ((outer_name, 0.0), (inner_name, body_constant)):
        function = graph.library.function.add()
        function.signature.name = name
        const = function.node_def.add(name="c", op="Const")
        const.attr["value"].tensor.dtype = 1
        const.attr["value"].tensor.float_val.append(value)
    return graph


def test_functions_named_only_in_nested_attributes_are_part_of_the_program():
    from imgclf.serving.program import canonical_graph

    same = canonical_graph(graph_calling(1.0, "outer_12", "inner_13"))
    assert same == canonical_graph(graph_calling(1.0, "outer_40", "inner_41"))
    assert [f.signature.name for f in same.library.function] == ["f0", "f1"]
    assert same != canonical_graph(graph_calling(2.0, "outer_40", "inner_41"))


def test_a_version_restored_into_a_standby_answers_as_a_new_session_and_never_touches_another(tmp_path):
    base = tmp_path / "toy"
    for version in (1, 2, 3):
        export_toy_model(base, version, warmup=True)
    standby = StandbySessions(1)
    loader = VersionLoader(standby=standby)
    first = loader("toy", 1, base / "1")
    assert not first.restored_into_standby and standby.keys("toy") == []
    loader.prepare_standby(first)
    assert len(standby.keys("toy")) == 1

    second = loader("toy", 2, base / "2")
    assert second.restored_into_standby and standby.keys("toy") == []
    fresh = Servable.load("toy", 2, base / "2")
    for signature, inputs in (("", X), ("pair", {"a": np.array([1, 2]), "b": np.array([0.5, 4.0], np.float32)})):
        got, want = second.predict(signature, inputs), fresh.predict(signature, inputs)
        assert got.keys() == want.keys()
        for name in got:
            np.testing.assert_array_equal(got[name], want[name])
    assert second.predict("", X)["tag"][0] == b"scale 2.0"
    assert first.predict("", X)["y"].tolist() == [[1.0, 2.0, 3.0]]      # version 1's session untouched

    # Version 1 stops serving: once its last holder lets go, its session is the next standby.
    del first
    gc.collect()
    assert len(standby.keys("toy")) == 1
    third = loader("toy", 3, base / "3")
    assert third.restored_into_standby
    assert third.predict("", X)["y"].tolist() == [[3.0, 6.0, 9.0]]
    assert second.predict("", X)["y"].tolist() == [[2.0, 4.0, 6.0]]


def test_a_checkpoint_that_does_not_restore_fails_the_load_and_its_standby_is_let_go(tmp_path):
    base = tmp_path / "toy"
    export_toy_model(base, 1)
    broken = export_toy_model(base, 2)
    data = next((broken / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[:8])
    standby = StandbySessions(1)
    loader = VersionLoader(standby=standby)
    serving = loader("toy", 1, base / "1")
    loader.prepare_standby(serving)
    with pytest.raises(Exception):
        loader("toy", 2, broken)
    assert standby.keys("toy") == []
    assert serving.predict("", X)["y"].tolist() == [[1.0, 2.0, 3.0]]
    # A different program never takes a standby.
    loader.prepare_standby(serving)
    other = loader("toy", 4, export_scaled(base / "4", 4.0))
    assert not other.restored_into_standby and len(standby.keys("toy")) == 1


def test_no_standby_sessions_means_a_new_session_for_every_version(tmp_path):
    base = tmp_path / "toy"
    export_toy_model(base, 1)
    export_toy_model(base, 2)
    standby = StandbySessions(0)
    loader = VersionLoader(standby=standby)
    first = loader("toy", 1, base / "1")
    loader.prepare_standby(first)
    del first
    gc.collect()
    assert standby.keys("toy") == [] and not loader("toy", 2, base / "2").restored_into_standby


def answer(server: LocalServer) -> float:
    reply = requests.post(f"{server.rest_url}/v1/models/toy:predict", json={"instances": [[1.0, 1.0, 1.0]]},
                          timeout=30)
    reply.raise_for_status()
    return reply.json()["predictions"][0]["y"][0]


@pytest.mark.parametrize("standbys, expected, batching", [(1, "restored into a standby session", False),
                                                       (1, "restored into a standby session", True),
                                                       (0, "loaded", False)])
def test_the_live_server_swaps_retrained_versions_into_its_standby(tmp_path, standbys, expected, batching):
    base, staging = tmp_path / "toy", tmp_path / "staging"
    export_toy_model(base, 1, warmup=True)
    flags = [f"--model_standby_sessions={standbys}"] + (["--enable_batching"] if batching else [])
    with LocalServer(base, "toy", poll_seconds=0.2, extra_args=flags) as server:
        assert answer(server) == 1.0
        for version in (2, 3):
            export_toy_model(staging, version, warmup=True)
            shutil.move(str(staging / str(version)), str(base / str(version)))
            assert poll(lambda: answer(server) == float(version) or None, 60, 0.1), f"version {version} never answered"
        log = server.log_path.read_text()
    how = {version: (kind, int(records)) for version, kind, records in re.findall(
        r"Version (\d+) of toy: (loaded|restored into a standby session) in .*, (\d+) warmup records replayed", log)}
    # A warm session replays only the first of the version's three warmup records.
    warm = (expected, 1 if standbys else 3)
    assert how == {"1": ("loaded", 3), "2": warm, "3": warm}
    assert ("a standby session for its next version" in log) == bool(standbys)


def test_a_model_removed_from_the_config_keeps_no_standby_until_it_loads_again(tmp_path):
    base = tmp_path / "toy"
    export_toy_model(base, 1)
    standby = StandbySessions(1)
    loader = VersionLoader(standby=standby)
    serving = loader("toy", 1, base / "1")
    loader.prepare_standby(serving)
    loader.forget("toy")
    assert standby.keys("toy") == []
    del serving                      # its last request done: nothing is kept for a removed model
    gc.collect()
    assert standby.keys("toy") == []
    again = loader("toy", 1, base / "1")     # back in the config
    del again
    gc.collect()
    assert len(standby.keys("toy")) == 1
