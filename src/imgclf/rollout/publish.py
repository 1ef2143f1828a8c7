"""Acting on versions: promote a staged export through the gate, roll back, clean up staged folders.

The model store does the I/O (stage, seal, rename, retire, lock); the promotion gate judges. This
module puts them together with the rules a user relies on:

- an export that is not whole (no completion marker, or files changed since) is never published,
  whatever FORCE says; neither is one that does not load or answer. FORCE overrides only the
  gate's accuracy comparison.
- a refused candidate stays staged, to inspect or to publish with FORCE;
- rolling back the only version needs FORCE (it would leave nothing to serve);
- staged folders that stopped changing long ago are what killed runs left; clean_staged removes
  those, never one still being written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from imgclf.model_store import ModelStore, Staged, StoreError
from imgclf.rollout import gate


class PublishError(StoreError):
    """A staged folder that cannot be published, or a rollback that cannot be done; the message
    says which and why."""


class GateRefused(PublishError):
    """The candidate may not be published; the message says why. It is still staged."""


def promote(store: ModelStore, staged: str | os.PathLike, examples: Sequence[gate.Example],
            tolerance: float, force: bool, validate_dir: str | os.PathLike | None = None,
            say: Callable[[str], None] = lambda text: None) -> int:
    """Gates a staged export and publishes it as the next version; returns the version.

    Raises IncompleteExport (never overridden) before any measuring when the export is not
    whole, and GateRefused (the model stays staged) when the gate refuses, unless the refusal is
    for accuracy alone and force is set."""
    store.check_sealed(staged)   # fail before the costly measuring
    examples = list(examples) + (gate.labelled_examples(validate_dir) if validate_dir else [])
    decision = gate.check(staged, store, examples, tolerance)
    for text in gate.describe(decision):
        say(text)
    if decision.refused:
        if not decision.overridable:
            raise GateRefused(f"{decision.refused_because}; it stays staged at {staged} "
                              f"(FORCE does not override this)")
        if not force:
            raise GateRefused(f"{decision.refused_because}; it stays staged at {staged} "
                              f"(publish anyway with --force / FORCE=1)")
        say("  publishing anyway: --force")
    version = store.publish(staged)
    say(f"published {Path(staged).name} as version {version} in {store.location}")
    return version


def rollback(store: ModelStore, allow_last: bool = False) -> tuple[int, Path]:
    """Retires the highest version: the server falls back to the next highest. Nothing is
    deleted. Returns (version, retired folder)."""
    with store.lock():
        versions = store.versions()
        if not versions:
            raise PublishError(f"{store.location}: no published version to roll back")
        if len(versions) == 1 and not allow_last:
            raise PublishError(f"{store.location}: version {versions[0]} is the only one; rolling it back "
                               f"would leave nothing to serve (use --force to do it anyway)")
        return versions[-1], store.retire(versions[-1])


def only_staged(store: ModelStore) -> Path:
    """The one sealed staged folder, for `publish` without STAGED=; else an error listing them."""
    staged = store.staged()
    sealed = [s.path for s in staged if s.sealed]
    if len(sealed) == 1:
        return sealed[0]
    found = "\n  ".join(f"{s.path}{'' if s.sealed else ' (incomplete: never publishable)'}"
                        for s in staged) or "(none)"
    raise PublishError(f"choose the folder to publish with --staged / STAGED=; staged in "
                       f"{store.location}:\n  {found}")


def stale_staged(store: ModelStore, older_than: float, include_sealed: bool = False) -> list[Staged]:
    """Staged folders nothing has changed in for older_than seconds: left by killed runs (or,
    with include_sealed, candidates the gate refused)."""
    return [s for s in store.staged() if s.age() >= older_than and (include_sealed or not s.sealed)]


def clean_staged(store: ModelStore, older_than: float, include_sealed: bool = False) -> list[Staged]:
    """Removes stale_staged(); returns what was removed."""
    removed = stale_staged(store, older_than, include_sealed)
    for staged in removed:
        store.discard(staged.path)
    return removed
