"""`imgclf evaluate` / `make evaluate`: how well `make train` does on images from sources or
styles it never saw, measured through the exported serving signature.

Two protocols, each run once per seed with the same train settings `make train` takes:
- leave one group out (MANIFEST=file.tsv): the images the manifest lists (paths relative to it,
  a `label` column and a group column, `source` by default) are pooled; for each group, train on
  all the others and score that group. "debian:pkg" counts as group "debian" (GROUP_SEPARATOR).
- held-out folders (TEST=dir,dir): train on DATA, score each folder of class folders.
Each fold trains with the product's own `train` into a work folder, loads the staged SavedModel
and sends it every test file's bytes, as a client would; scores give accuracy, balanced accuracy
and calibration error per group or folder and pooled. Prints a table; OUTPUT gets the JSON.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from imgclf.settings import EvaluateSettings, TrainSettings, add_settings_flags, settings_parser

log = logging.getLogger(__name__)
_BATCH = 32


@dataclass
class Fold:
    name: str                      # the held-out group or test folder
    data: Path                     # class folders to train on
    tests: list[tuple[Path, str]]  # (file, label) to score
    groups: list[str] | None = None  # each test file's folder, when several are scored: figures per folder


class EvaluationError(ValueError):
    """A manifest or folder the harness cannot use; the message names it."""


def leave_group_out_folds(manifest: Path, group_column: str, separator: str, workdir: Path) -> list[Fold]:
    """One fold per group of the manifest: its training data a folder of links to every other
    group's images, in class folders (file names kept, so the trainer's hash split is the same)."""
    rows = read_manifest(manifest, group_column)
    groups = sorted({group_of(row[group_column], separator) for row in rows})
    if len(groups) < 2:
        raise EvaluationError(f"{manifest}: needs two or more groups in column {group_column!r}, found {groups}")
    folds = []
    for index, group in enumerate(groups):
        data = workdir / f"fold-{index:02d}" / "data"
        tests = []
        for row in rows:
            path = (manifest.parent / row["image"]).resolve()
            if group_of(row[group_column], separator) == group:
                tests.append((path, row["label"]))
            else:
                link_into(data / row["label"], path)
        folds.append(Fold(group, data, tests))
    return folds


def link_into(folder: Path, target: Path) -> None:
    """A link to target in folder under target's own name (so the trainer's split by file name is
    the same as in the original folders), or with -2, -3, ... before the suffix when it is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    link, count = folder / target.name, 1
    while link.is_symlink() or link.exists():
        count += 1
        link = folder / f"{target.stem}-{count}{target.suffix}"
    link.symlink_to(target)


def read_manifest(manifest: Path, group_column: str) -> list[dict]:
    try:
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as error:
        raise EvaluationError(f"{manifest}: cannot read ({error.strerror or error})") from error
    missing = {"image", "label", group_column} - set(rows[0] if rows else {})
    if missing:
        raise EvaluationError(f"{manifest}: no column(s) {', '.join(sorted(missing))} (tab-separated, with a header)")
    return rows


def group_of(value: str, separator: str) -> str:
    return value.split(separator, 1)[0] if separator else value


def held_out_folder_folds(data: Path, tests: list[Path]) -> list[Fold]:
    """One fold: train on data, score every test folder (each a set of class folders)."""
    from imgclf.data_folders import find_class_folders

    scored, groups = [], []
    for folder in tests:
        for label, files in find_class_folders(folder).items():
            scored += [(path, label) for path in files]
            groups += [folder.name] * len(files)
    return [Fold(",".join(p.name for p in tests), data, scored, groups if len(tests) > 1 else None)]


def score_files(model_dir: Path, files: list[Path]) -> tuple[list[str], "list"]:
    """(label order, scores [N, K]) of the SavedModel's serving signature on the files' bytes."""
    import numpy as np
    import tensorflow as tf

    from imgclf import contract

    signature = tf.saved_model.load(str(model_dir)).signatures[contract.SIGNATURE_NAME]
    labels, scores = None, []
    for start in range(0, len(files), _BATCH):
        batch = tf.constant([path.read_bytes() for path in files[start:start + _BATCH]])
        outputs = signature(**{contract.INPUT_NAME: batch})
        labels = [name.decode() for name in outputs[contract.CLASSES_OUTPUT].numpy()[0]]
        scores.append(outputs[contract.SCORES_OUTPUT].numpy())
    return labels or [], np.concatenate(scores) if scores else np.zeros([0, 0])


def run_fold(fold: Fold, train_settings: TrainSettings, seed: int, workdir: Path) -> dict:
    """Trains on the fold with the product's `train`, scores its tests through the signature."""
    import numpy as np

    from imgclf import model_store
    from imgclf.trainer.pipeline import feature_cache_dir, pdf_cache_dir, train
    from imgclf.trainer.report import split_metrics

    # The caches stay where `make train` keeps them, so runs and folds share features and pages.
    settings = dataclasses.replace(
        train_settings, data=str(fold.data), seed=seed, models=str(workdir / "models"), log_dir=str(workdir / "logs"),
        warmup_records=0, cache_dir=str(feature_cache_dir(train_settings)), pdf_cache=str(pdf_cache_dir(train_settings)))
    started = time.perf_counter()
    result = train(settings)
    trained_seconds = time.perf_counter() - started
    try:
        labels, scores = score_files(result.staged, [path for path, _ in fold.tests])
    finally:
        model_store.open_store(result.base_path).discard(result.staged)
    truth = np.array([labels.index(label) if label in labels else -1 for _, label in fold.tests])
    known = truth >= 0
    metrics = split_metrics(scores[known], truth[known], labels)
    by_group = {}
    for group in dict.fromkeys(fold.groups or []):
        chosen = known & (np.array(fold.groups) == group)
        by_group[group] = summary(split_metrics(scores[chosen], truth[chosen], labels))
    return {"fold": fold.name, "by_group": by_group, "seed": seed, "images": len(fold.tests), "unknown_label_images": int((~known).sum()),
            "recipe": result.metadata["recipe"]["description"], "passes": result.metadata["passes_per_image"],
            "train_seconds": round(trained_seconds, 1), "metrics": metrics, "labels": labels,
            "scores": scores[known].tolist(), "truth": truth[known].tolist()}


def pooled(runs: list[dict]) -> dict:
    """Accuracy, balanced accuracy and calibration error over every fold's images together."""
    import numpy as np

    from imgclf.trainer.report import split_metrics

    labels = runs[0]["labels"]
    scores = np.concatenate([np.asarray(r["scores"]).reshape(-1, len(labels)) for r in runs])
    truth = np.concatenate([np.asarray(r["truth"], np.int64) for r in runs])
    return split_metrics(scores, truth, labels)


def evaluate(settings: EvaluateSettings, train_settings: TrainSettings, workdir: Path) -> dict:
    if settings.manifest:
        folds = leave_group_out_folds(Path(settings.manifest), settings.group_column, settings.group_separator,
                                      workdir)
        protocol = f"leave one {settings.group_column} out ({Path(settings.manifest).name})"
    elif settings.test:
        folds = held_out_folder_folds(Path(train_settings.data), [Path(t) for t in settings.test.split(",") if t])
        protocol = f"train on {Path(train_settings.data).name}, test on {settings.test}"
    else:
        raise EvaluationError("give MANIFEST (leave one group out) or TEST (held-out folders)")
    seeds = [int(seed) for seed in str(settings.seeds).split(",") if seed.strip()]
    results = {"protocol": protocol, "seeds": {}}
    for seed in seeds:
        runs = []
        for fold in folds:
            log.info("evaluate: seed %d, fold %s (%d test images)", seed, fold.name, len(fold.tests))
            runs.append(run_fold(fold, train_settings, seed, workdir))
        results["seeds"][seed] = {"pooled": summary(pooled(runs)), "folds": [public(run) for run in runs]}
    accuracies = [r["pooled"]["accuracy"] for r in results["seeds"].values()]
    results["mean_accuracy"] = round(statistics.mean(accuracies), 4)
    return results


def summary(metrics: dict) -> dict:
    return {key: metrics[key] for key in ("accuracy", "balanced_accuracy", "ece", "count")}


def public(run: dict) -> dict:
    """A fold's figures without its raw scores."""
    return {key: value for key, value in run.items() if key not in ("scores", "truth", "labels", "metrics")} | {
        **summary(run["metrics"]), "per_class": run["metrics"]["per_class"]}


def format_results(results: dict) -> str:
    lines = [f"protocol: {results['protocol']}"]
    for seed, figures in results["seeds"].items():
        lines.append(f"seed {seed}:")
        lines.append(f"  {'held out':<28}{'images':>7}{'accuracy':>10}{'balanced':>10}{'ECE':>7}  recipe")
        for fold in figures["folds"]:
            lines.append(f"  {fold['fold'][:27]:<28}{fold['images']:>7}{fold['accuracy']:>10.4f}"
                         f"{fold['balanced_accuracy']:>10.4f}{fold['ece']:>7.3f}  {fold['recipe']} "
                         f"({fold['passes']} pass{'es' if fold['passes'] > 1 else ''})")
            for group, g in fold["by_group"].items():
                lines.append(f"    {group[:25]:<26}{g['count']:>7}{g['accuracy']:>10.4f}{g['balanced_accuracy']:>10.4f}"
                             f"{g['ece']:>7.3f}")
        p = figures["pooled"]
        lines.append(f"  {'pooled':<28}{p['count']:>7}{p['accuracy']:>10.4f}{p['balanced_accuracy']:>10.4f}"
                     f"{p['ece']:>7.3f}")
    lines.append(f"mean pooled accuracy over seeds {', '.join(map(str, results['seeds']))}: "
                 f"{results['mean_accuracy']:.4f}")
    return "\n".join(lines)


def build_parser(command: str = "evaluate") -> argparse.ArgumentParser:
    parser = settings_parser(EvaluateSettings, command, __doc__.split("\n\n")[0])
    train_flags = parser.add_argument_group("training (as `imgclf train`)")
    add_settings_flags(train_flags, TrainSettings)
    return parser


def main(argv: list[str], command: str = "evaluate") -> int:
    from imgclf.trainer.cli import configure_logging

    arguments = vars(build_parser(command).parse_args(argv))
    names = {f.name for f in dataclasses.fields(EvaluateSettings)}
    settings = EvaluateSettings(**{k: v for k, v in arguments.items() if k in names})
    train_settings = TrainSettings(**{k: v for k, v in arguments.items() if k not in names})
    configure_logging()
    from imgclf.data_folders import DataError
    from imgclf.settings import SettingsError
    from imgclf.trainer.backbone import ModuleError

    workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="imgclf-evaluate-"))
    try:
        results = evaluate(settings, train_settings, workdir)
    except (EvaluationError, DataError, ModuleError, SettingsError, OSError) as error:
        print(f"imgclf {command}: error: {error}", file=sys.stderr)
        return 1
    finally:
        if not settings.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_results(results), flush=True)
    if settings.output:
        Path(settings.output).write_text(json.dumps(results, indent=2) + "\n")
    return 0
