"""Property-based fuzzing of the REST API (hypothesis): whatever body arrives on a model's
predict/classify/regress path, the answer is a 200 or a 4xx carrying {"error": ...} (never a 5xx,
never a dropped connection), the server still answers a good request after it, and its memory
stays bounded over the whole run."""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgclf.abuse_attacks import process_rss_bytes
from imgclf.serving import LocalServer
from serving_models import export_toy_model

pytestmark = pytest.mark.slow

GOOD = {"instances": [[1, 1, 1]]}
EXAMPLES = 300
RSS_GROWTH_LIMIT_MIB = 150


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / "toy"
    export_toy_model(base, 1)
    with LocalServer(base, "toy", poll_seconds=30) as server, requests.Session() as session:
        session.post(server.rest_url + "/v1/models/toy:predict", json=GOOD, timeout=30)
        server.session = session
        server.rss_before = process_rss_bytes(server.process.pid)
        yield server


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.fixed_dictionaries({"b64": st.text(max_size=12)}))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=40)
signature_names = st.sampled_from(["", "serving_default", "pair", "image", "classify", "regress", "nope"])
requests_like = st.fixed_dictionaries({}, optional={
    "signature_name": signature_names | json_values,
    "instances": json_values, "inputs": json_values, "examples": json_values, "context": json_values,
})
bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    requests_like.map(lambda v: json.dumps(v, allow_nan=True).encode()),
)
paths = st.sampled_from(["/v1/models/toy:predict", "/v1/models/toy:classify", "/v1/models/toy:regress",
                         "/v1/models/toy/versions/1:predict", "/v1/models/toy/labels/stable:predict",
                         "/v1/models/other:predict"])


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=paths, body=bodies)
def test_any_body_gets_a_json_answer_and_the_server_keeps_serving(fuzzed, path, body):
    reply = fuzzed.session.post(fuzzed.rest_url + path, data=body, timeout=30,
                                headers={"Content-Type": "application/json"})
    assert reply.status_code == 200 or 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert reply.headers["Content-Type"] == "application/json"
    if reply.status_code != 200:
        assert isinstance(reply.json().get("error"), str), reply.text[:300]
    good = fuzzed.session.post(fuzzed.rest_url + "/v1/models/toy:predict", json=GOOD, timeout=30)
    assert good.status_code == 200


def test_memory_stayed_bounded_over_the_fuzzing(fuzzed):
    growth = (process_rss_bytes(fuzzed.process.pid) - fuzzed.rss_before) / (1 << 20)
    assert growth < RSS_GROWTH_LIMIT_MIB, f"RSS grew by {growth:.0f} MiB over {EXAMPLES} fuzzed requests"
