"""`imgclf pages --pdfs DIR --out DIR [options]`: flags map one to one onto settings.PagesSettings.

Exit status: 0 the run finished (files that gave no page are listed and counted, not fatal);
1 PDFS held no file at all; 2 bad usage or the renderer is not installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from imgclf.pdf.problems import PageProblem
from imgclf.pdf.render import RENDERERS
from imgclf.progress import Progress
from imgclf.settings import PagesSettings, settings_parser


def build_parser(command: str = "pages") -> argparse.ArgumentParser:
    return settings_parser(
        PagesSettings, command,
        "Render page 1 of every PDF under --pdfs as the original tool did, into "
        "--out/<same sub-folder>/<sha1 of the PDF>.jpg. Defaults: imgclf/settings.py.",
        epilog=__doc__.split("\n\n", 1)[1])


def settings_problem(settings: PagesSettings) -> str | None:
    if not settings.pdfs or not settings.out:
        return "--pdfs and --out are required (make pages PDFS=dir OUT=dir)"
    if not Path(settings.pdfs).is_dir():
        return f"--pdfs {settings.pdfs}: no such folder"
    if settings.renderer not in RENDERERS:
        return f"--renderer {settings.renderer!r}: use one of {', '.join(RENDERERS)}"
    if settings.timeout <= 0 or settings.workers < 0 or settings.log_every < 1:
        return "--timeout must be positive, --workers 0 or more, --log-every 1 or more"
    return None


def main(argv: list[str], command: str = "pages") -> int:
    from imgclf.pdf.pages import PagesRun, iter_files, summary

    settings = PagesSettings(**vars(build_parser(command).parse_args(argv)))
    problem = settings_problem(settings)
    if problem:
        print(f"imgclf {command}: {problem}", file=sys.stderr)
        return 2
    out = Path(settings.out).resolve()
    root = Path(settings.pdfs)
    total = sum(1 for _ in iter_files(root, skip=out))
    if total == 0:
        print(f"imgclf {command}: no files under {settings.pdfs}", file=sys.stderr)
        return 1
    # A bar on a terminal; in a log a line per LOG_EVERY files (PROGRESS=0: neither).
    progress = Progress(total, "pages", "pdf", enabled=settings.progress is not False,
                        every=settings.log_every, seconds=0)
    try:
        run = PagesRun(settings, report=progress.write)
    except PageProblem as error:
        progress.close()
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return 2
    run.tally.files = total
    try:
        tally = run.execute(iter_files(root, skip=out), lambda: progress.update(1))
    except KeyboardInterrupt:
        progress.close()
        print(f"imgclf {command}: interrupted; run again to go on where it stopped", file=sys.stderr)
        return 130
    progress.close()
    print(summary(tally, settings, run_workers(settings)), flush=True)
    return 0


def run_workers(settings: PagesSettings) -> int:
    import os

    return settings.workers or os.cpu_count() or 1

