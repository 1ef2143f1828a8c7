"""Writes what settings.py declares where Make and people read it: settings.mk (the Makefile's
NAME_FLAGS, one `$(call flag,VARIABLE,--flag)` per field) and docs/settings.md (every variable,
flag, default and meaning, per command). `make settings` runs it; tests/test_settings.py fails
while either file differs from what it would write."""

from __future__ import annotations

import sys
from pathlib import Path

from imgclf.settings import COMMANDS, Knob, knobs

MAKE_INCLUDE, REFERENCE = "settings.mk", "docs/settings.md"

MAKE_HEADER = """\
# Generated from src/imgclf/settings.py by `make settings`: do not edit.
# <COMMAND>_FLAGS (clean-staged: CLEAN_STAGED_FLAGS) maps each Make variable of `imgclf <command>` to its flag, passing it only when the
# variable is set, so that settings.py keeps the only defaults. Booleans: VARIABLE=1|0.

# flag NAME,--flag -> "--flag $(NAME)" when NAME is set
flag = $(if $($(1)),$(2) $($(1)))
# toggle NAME,--flag -> "--flag" when NAME is 1/true/yes/on, "--no-flag" when 0/false/no/off
toggle = $(if $(filter 1 true yes on,$($(1))),$(2),$(if $(filter 0 false no off,$($(1))),--no-$(patsubst --%,%,$(2))))
"""


def make_term(knob: Knob) -> str:
    if knob.meta.get("positional"):
        return f"$({knob.make})"
    function = "toggle" if knob.boolean and knob.meta.get("switch") else "flag"
    return f"$(call {function},{knob.make},{knob.flag})"


def make_include() -> str:
    blocks = [MAKE_HEADER]
    for command, settings_class in COMMANDS.items():
        terms = [make_term(k) for k in knobs(settings_class, command) if k.make]
        name = command.upper().replace("-", "_") + "_FLAGS"
        blocks.append(f"{name} = $(strip \\\n  " + " \\\n  ".join(terms) + ")\n")
    return "\n".join(blocks)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(knob: Knob) -> str:
    if knob.boolean:
        return str(int(knob.default))
    return "(none)" if knob.default in (None, "") else f"`{knob.default}`"


def reference() -> str:
    lines = ["# Settings: every Make variable and flag",
             "",
             "Generated from `src/imgclf/settings.py` by `make settings`; do not edit. `make <command> "
             "VARIABLE=value` passes `--flag value` to `imgclf <command>` only when the variable is set, "
             "so the defaults below are the only ones. Booleans take 1 or 0.", ""]
    seen: dict[type, list[str]] = {}
    for command, settings_class in COMMANDS.items():
        seen.setdefault(settings_class, []).append(command)
    for settings_class, commands in seen.items():
        lines += [f"## {' / '.join(f'`{c}`' for c in commands)} ({settings_class.__name__})", "",
                  "| Make variable | flag | default | meaning |", "| --- | --- | --- | --- |"]
        for knob in knobs(settings_class):
            if not knob.make:
                continue
            only = knob.meta.get("commands")
            where = f" ({', '.join(only)} only)" if only and len(commands) > 1 else ""
            flag = "positional" if knob.meta.get("positional") else f"`{knob.flag}`"
            lines.append(f"| `{knob.make}` | {flag} | {_cell(_default(knob))} | {_cell(knob.help) + where} |")
        lines.append("")
    return "\n".join(lines)


def outputs() -> dict[str, str]:
    return {MAKE_INCLUDE: make_include(), REFERENCE: reference()}


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0] if argv else ".")
    for name, text in outputs().items():
        (root / name).write_text(text)
        print(f"wrote {root / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
