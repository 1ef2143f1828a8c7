"""`imgclf demo`: the whole loop (pages, train, serve, validate) on a small scale."""

from __future__ import annotations

import csv
import re

import pytest
import requests

from imgclf import contract, demo
from imgclf.data_folders import iter_image_files
from imgclf.model_store import open_model

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_loop_and_stops_the_server(tmp_path, capsys):
    workdir = tmp_path / "demo"
    code = demo.main(["--workdir", str(workdir), "--per-class", "20", "--held-out-per-class", "6",
                      "--image-size", "32"])
    out = capsys.readouterr().out
    assert code == 0, out
    for number in range(1, 5):
        assert f"== {number}/4 " in out

    versions = open_model(workdir / "models").versions()
    assert len(versions) == 1
    assert f"model version {versions[0]}" in out

    rows = list(csv.DictReader((workdir / "results.csv").open()))
    held_out = sorted(map(str, iter_image_files(workdir / "pages" / "held-out")))
    assert sorted(r["path"] for r in rows) == held_out and len(held_out) == 12
    assert all(r["predicted"] in ("other", "research") and not r["error"] for r in rows)
    accuracy = float(re.search(r"^accuracy ([0-9.]+) \(12 images", out, re.M).group(1))
    right = sum(r["predicted"] == r["true_label"] for r in rows)
    assert accuracy == pytest.approx(right / 12, abs=1e-4)

    rest_url = re.search(r"^REST (http://\S+)", out, re.M).group(1)
    with pytest.raises(requests.ConnectionError):
        requests.get(rest_url + "/v1/models/" + contract.DEFAULT_MODEL_NAME, timeout=5)
