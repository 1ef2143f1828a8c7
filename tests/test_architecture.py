"""The dependency rule (docs/architecture.md) holds on the real import graph.

The rule itself is import-linter contracts in .importlinter: layers from the
console script down to the contract, trainer | serving | client independent, no cycles between
sibling modules at any depth. grimp reads every import statement of every module, including the
ones inside functions, so a lazy import counts like any other.

ALLOWED below is the explicit list of today's known violations, each with the stream that is
removing it. Nothing else may break the rule, and an entry whose import is gone fails the test too,
so the list only shrinks: delete the line when your change removes the import.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / ".importlinter"

# (importer, imported): the stream removing it, and how. Empty since the model store, the serving
# hardening and this architecture work removed the last ones; a new entry needs a stream and a plan.
ALLOWED: dict[tuple[str, str], str] = {}


def broken_contracts(contracts: Path, allowed) -> str:
    """import-linter's report on the contracts in the `contracts` file, with `allowed` imports ignored;
    "" when every contract is kept."""
    import importlinter.api  # noqa: F401  (configures import-linter's readers and graph builder)
    from importlinter.application import output, rendering, use_cases

    options = use_cases.read_user_options(str(contracts))
    for contract in options.contracts_options:
        contract["ignore_imports"] = [*contract.get("ignore_imports", []),
                                      *(f"{a} -> {b}" for a, b in allowed)]
        contract["unmatched_ignore_imports_alerting"] = "none"   # stale entries: test below
    use_cases._register_built_in_contract_types()
    report = use_cases.create_report(options, cache_dir=None)
    if not report.contains_failures:
        return ""
    with output.console.capture() as captured:
        rendering.render_report(report)
    return captured.get()


def test_dependencies_follow_the_layers():
    broken = broken_contracts(CONTRACTS, ALLOWED)
    assert not broken, "the dependency rule is broken (docs/architecture.md):\n" + broken


def test_every_allowed_violation_still_exists():
    graph = grimp.build_graph("imgclf", cache_dir=None)
    gone = [f"{a} -> {b}  ({stream})" for (a, b), stream in ALLOWED.items()
            if not graph.direct_import_exists(importer=a, imported=b)]
    assert not gone, ("these allowed violations are fixed: remove them from ALLOWED in "
                      "tests/test_architecture.py:\n  " + "\n  ".join(gone))


# An upward import inside a function, added to a copy of the package: the check must catch it.
LAZY_UPWARD_IMPORT = textwrap.dedent("""

    def _lazy_upward_import():
        from imgclf.trainer import pipeline
        return pipeline
""")


def test_a_new_lazy_upward_import_breaks_the_rule(tmp_path):
    shutil.copytree(ROOT / "src" / "imgclf", tmp_path / "imgclf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "imgclf" / "client" / "files.py", "a") as module:
        module.write(LAZY_UPWARD_IMPORT)
    shutil.copy(CONTRACTS, tmp_path / ".importlinter")
    script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_architecture as t; "
              "print(t.broken_contracts(t.Path(sys.argv[1]) / '.importlinter', t.ALLOWED))")
    found = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "imgclf.client.files -> imgclf.trainer.pipeline" in found.stdout, found.stdout


@pytest.mark.parametrize("module", ["imgclf.contract", "imgclf.settings"])
def test_bottom_modules_import_no_third_party_package(module):
    """contract and settings are plain Python: the client (no TensorFlow) and every CLI's flag
    parsing import them."""
    graph = grimp.build_graph("imgclf", include_external_packages=True, cache_dir=None)
    outside = {name for name in graph.find_modules_directly_imported_by(module)
               if not name.startswith("imgclf")}
    assert outside <= set(sys.stdlib_module_names), outside - set(sys.stdlib_module_names)
