"""A CPU-only run prints no CUDA error: the console script sets TensorFlow's log level before any
command imports TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imgclf import cli, tf_logging

# The first TensorFlow op initialises the devices: where no NVIDIA driver is, TensorFlow then logs
# "failed call to cuInit" at ERROR level.
RUN_AN_OP = "import tensorflow as tf; print(int(tf.constant(2) * 3))"


def test_the_level_is_3_without_a_driver_2_with_one_and_a_users_value_stays(monkeypatch):
    monkeypatch.setattr(tf_logging, "nvidia_driver_present", lambda: False)
    assert tf_logging.quiet_tensorflow_logs({}) == "3"
    monkeypatch.setattr(tf_logging, "nvidia_driver_present", lambda: True)
    assert tf_logging.quiet_tensorflow_logs({}) == "2"
    assert tf_logging.quiet_tensorflow_logs({"TF_CPP_MIN_LOG_LEVEL": "0"}) == "0"


def test_the_console_script_sets_it_before_the_command_runs(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    seen = []
    module = type(sys)("fake_command")
    module.main = lambda argv, command: seen.append(os.environ.get("TF_CPP_MIN_LOG_LEVEL")) or 0
    monkeypatch.setitem(sys.modules, "fake_command", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", ""))
    assert cli.main(["fake"]) == 0
    assert seen == [tf_logging.quiet_tensorflow_logs({})]


@pytest.mark.slow
@pytest.mark.skipif(tf_logging.nvidia_driver_present(), reason="this machine has an NVIDIA driver")
def test_no_cuinit_error_on_a_machine_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = [sys.executable, "-c", "from imgclf.tf_logging import quiet_tensorflow_logs as q; q(); " + RUN_AN_OP]
    plain = [sys.executable, "-c", RUN_AN_OP]
    runs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for c in (quiet, plain)]
    (quiet_out, quiet_err), (_, plain_err) = [run.communicate(timeout=600) for run in runs]
    assert quiet_out.strip() == "6", quiet_err
    assert "cuInit" not in quiet_err, quiet_err
    if "cuInit" not in plain_err:
        pytest.skip("this TensorFlow logs no cuInit error even at level 0: nothing to silence")
