"""One road from settings to flags to Make: every field of settings.py is a flag of its command's
real parser, settings.mk (the Makefile's variables) and docs/settings.md are what settings.py
generates, and `make` passes each variable to its flag."""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path

import pytest

from imgclf import __version__, settings, settings_make

ROOT = Path(__file__).resolve().parents[1]

# Each command's real parser, as `imgclf <command>` builds it.
PARSERS = {
    "train": ("imgclf.trainer.cli", "build_parser"),   # the flags imgclf.rollout.training parses
    "evaluate": ("imgclf.evaluate", "build_parser"),
    "serve": ("imgclf.serve", "build_parser"),
    "validate": ("imgclf.client.cli", "build_parser"), "demo": ("imgclf.demo", "build_parser"),
    "pages": ("imgclf.pdf.cli", "build_parser"),
    "publish": ("imgclf.rollout.cli", "_parser"), "rollback": ("imgclf.rollout.cli", "_parser"),
    "pin": ("imgclf.rollout.cli", "_parser"), "unpin": ("imgclf.rollout.cli", "_parser"),
    "status": ("imgclf.rollout.cli", "_parser"), "clean-staged": ("imgclf.rollout.cli", "_parser"),
    "drill": ("imgclf.rollout.drill", "build_parser"),
    "bench": ("imgclf.bench", "build_parser"), "abuse": ("imgclf.abuse", "build_parser"), "e2e": ("imgclf.e2e", "build_parser"),
    "run": ("imgclf.runner", "build_parser"), "k8s-check": ("imgclf.kube", "build_parser"),
    "merge-results": ("imgclf.client.merge", "build_parser"), "swarm-deploy": ("imgclf.swarm", "build_parser"),
    "swarm-status": ("imgclf.swarm", "build_parser"), "swarm-down": ("imgclf.swarm", "build_parser"),
    "swarm-e2e": ("imgclf.swarm.e2e", "build_parser"),
}
# Where a command's parser keeps a setting under another name (serve: tensorflow_model_server's).
DESTINATIONS = {("serve", "rest_port"): "rest_api_port", ("serve", "grpc_port"): "port"}
SAMPLES = {"str": "x", "tuple[str, ...]": "x", "bool | None": "1", "int": "7", "float": "0.5", "str | None": "x", "int | None": "7", "float | None": "0.5"}
EXPECTED = {"str": "x", "tuple[str, ...]": ["x"], "bool | None": True, "int": 7, "float": 0.5, "str | None": "x", "int | None": 7, "float | None": 0.5}


def parser_of(command: str):
    module, function = PARSERS[command]
    return getattr(importlib.import_module(module), function)(command)


def sample(knob: settings.Knob) -> tuple[list[str], object]:
    """The arguments Make passes for the knob set to a sample value, and the value expected."""
    if knob.boolean:
        flipped = not knob.default
        if knob.meta.get("switch"):
            return [knob.flag if flipped else "--no-" + knob.flag[2:]], flipped
        return [knob.flag, str(int(flipped))], flipped
    if knob.meta.get("choices"):
        value = next(c for c in knob.meta["choices"] if c != knob.default)
        return [knob.flag, value], value
    text, value = SAMPLES[knob.type], EXPECTED[knob.type]
    if knob.type == "str" and knob.meta.get("check"):     # a checked text: its default passes the check
        text = value = knob.default
    return ([text] if knob.meta.get("positional") else [knob.flag, text]), value


def test_the_makefile_maps_no_variable_by_hand():
    """Every Make variable reaches its flag through settings.mk: a `$(call flag,...)` in the
    Makefile would be a second road (declare the field in settings.py instead)."""
    makefile = (ROOT / "Makefile").read_text()
    assert "$(call flag," not in makefile and "$(call switch," not in makefile and "$(call toggle," not in makefile


def test_every_command_has_a_parser_and_a_make_target():
    assert set(PARSERS) == set(settings.COMMANDS)
    makefile = (ROOT / "Makefile").read_text()
    for command in settings.COMMANDS:
        name = command.upper().replace("-", "_") + "_FLAGS"
        assert f"$({name})" in makefile, f"the Makefile does not pass {name}"


@pytest.mark.parametrize("command", sorted(settings.COMMANDS))
def test_every_setting_is_a_flag_of_the_real_parser(command):
    settings_class = settings.COMMANDS[command]
    for knob in settings.knobs(settings_class, command):
        if knob.flag is None:
            continue
        arguments, expected = sample(knob)
        required = [a for k in settings.knobs(settings_class, command) if k.meta.get("required") and k is not knob
                    for a in sample(k)[0]]
        if command in ("validate",) and not knob.meta.get("positional"):
            required += ["somewhere"]
        if command == "run":
            required += ["train"]
        parsed = vars(parser_of(command).parse_args(arguments + required))
        destination = DESTINATIONS.get((command, knob.name), knob.name)
        assert parsed[destination] == expected, (command, arguments, parsed)


def test_defaults_of_the_generated_parsers_are_the_settings_defaults():
    for command in ("train", "validate", "demo", "drill", "e2e"):
        required = ["d"] if command == "validate" else []
        parsed = vars(parser_of(command).parse_args(required))
        for knob in settings.knobs(settings.COMMANDS[command], command):
            if knob.flag and not knob.meta.get("positional") and not knob.meta.get("environment"):
                assert parsed[knob.name] == knob.default, (command, knob.name)


def test_bad_values_name_the_flag_and_the_reason(capsys):
    for command, arguments in (("validate", ["d", "--batch", "0"]), ("validate", ["d", "--min-accuracy", "90"]),
                               ("validate", ["d", "--version", "3", "--label", "stable"]),
                               ("demo", ["--protocol", "soap"]), ("train", ["--fine-tune", "maybe"]),
                               ("pin", [])):
        with pytest.raises(SystemExit) as stopped:
            module, function = PARSERS[command]
            if command == "validate":
                importlib.import_module(module).parse_settings(arguments)
            else:
                parser_of(command).parse_args(arguments)
        assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch: 0: must be 1 or more" in err
    assert "argument --min-accuracy: 90: give a fraction between 0 and 1" in err
    assert "--version and --label" in err and "the following arguments are required: --version" in err


def test_settings_mk_and_the_reference_are_what_settings_py_generates():
    for name, text in settings_make.outputs().items():
        current = (ROOT / name).read_text() if (ROOT / name).exists() else ""
        assert current == text, f"{name} is stale: run `make settings` and commit it"


def make_dry_run(*arguments: str) -> str:
    """The imgclf command line `make -n` prints, spaces squeezed (no variable from the environment)."""
    clean = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    done = subprocess.run(["make", "-n", "--no-print-directory", *arguments], cwd=ROOT, env=clean,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return " ".join([line for line in done.stdout.splitlines() if "/imgclf " in line][-1].split())


def test_make_passes_each_variable_to_its_flag_and_nothing_unset():
    line = make_dry_run("train", "DATA=pages", "WARMUP_RECORDS=3", "LOG_DIR=logs", "FINE_TUNE=1")
    assert line.endswith("imgclf run train --data pages --fine-tune 1 --warmup-records 3 --log-dir logs")
    line = make_dry_run("validate", "DIR=check", "ALL=1", "PROGRESS=0", "LABEL=canary")
    assert line.endswith("imgclf run validate check --label canary --all --no-progress")
    line = make_dry_run("bench", "QUICK=1", "SERVING_IMAGES=9", "MEMORY_FILES=10,20", "PUBLISHES=1")
    assert line.endswith("imgclf bench --quick 1 --serving-images 9 --memory-files 10,20 --publishes 1")
    assert make_dry_run("serve", "REST_PORT=9501", "GRPC_PORT=9500").endswith(
        "imgclf serve --rest_api_port 9501 --port 9500")
    assert make_dry_run("status").endswith("imgclf status")


def test_one_version_string():
    """pyproject.toml reads imgclf.__version__; the compose file names no version of its own."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = {attr = "imgclf.__version__"}' in pyproject
    assert __version__ not in (ROOT / "docker-compose.yml").read_text()
    from importlib.metadata import version

    assert version("imgclf") == __version__
