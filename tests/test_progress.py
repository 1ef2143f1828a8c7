"""The one progress display: a bar on a terminal, a few plain lines in a log, nothing when off."""

from __future__ import annotations

import io

from imgclf.progress import Progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_per_tenth_and_a_closing_line_not_a_bar():
    log = io.StringIO()
    with Progress(total=100, desc="validate", unit="img", stream=log, seconds=0) as progress:
        for _ in range(100):
            progress.update()
        progress.set_postfix(accuracy=0.875)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 10                       # 10 %, 20 %, ... 90 %, then the closing line
    assert lines[0].startswith("validate: 10/100 img (10 %), ")
    assert lines[-1].startswith("validate: 100 img in ") and lines[-1].endswith("accuracy 0.8750")
    assert "img/s" in lines[-1]


def test_a_short_run_in_a_log_gets_only_its_closing_line():
    log = io.StringIO()
    with Progress(total=100, desc="gate", unit="img", stream=log, seconds=60) as progress:
        progress.update(50)
        progress.update(50)
    assert len(log.getvalue().splitlines()) == 1 and log.getvalue().startswith("gate: 100 img in ")


def test_one_line_per_epoch_when_each_epoch_is_a_progress():
    log = io.StringIO()
    for epoch in range(3):
        with Progress(total=500, desc=f"head epoch {epoch + 1}/3", unit="batch", stream=log, every=10**9) as bar:
            bar.update(500)
    assert [line.split(":")[0] for line in log.getvalue().splitlines()] == [
        "head epoch 1/3", "head epoch 2/3", "head epoch 3/3"]


def test_a_terminal_gets_a_bar_and_written_lines_go_to_their_own_stream():
    terminal, out = Terminal(), io.StringIO()
    with Progress(total=4, desc="gate", unit="batch", stream=terminal) as progress:
        for number in range(4):
            progress.write(f"line {number}", file=out)
            progress.update()
    assert "\r" in terminal.getvalue() and "4/4" in terminal.getvalue()
    assert out.getvalue().split() == ["line", "0", "line", "1", "line", "2", "line", "3"]


def test_disabled_prints_nothing_but_written_lines():
    log = io.StringIO()
    assert list(track(range(5), desc="x", enabled=False, stream=log)) == [0, 1, 2, 3, 4]
    assert log.getvalue() == ""


def test_unknown_total_closes_with_a_count():
    log = io.StringIO()
    assert sum(track(iter(range(7)), desc="files", unit="file", stream=log)) == 21
    assert log.getvalue().startswith("files: 7 file in ")
