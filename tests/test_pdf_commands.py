"""`make train` and `make validate` pointed at folders with real PDFs in them (tests/data/pdfs)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgclf import contract
from imgclf.client import cli as client_cli
from imgclf.client.validate import EXIT_FAILED, EXIT_OK, Run
from imgclf.data_folders import iter_image_files
from imgclf.rollout import training as train_cli

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "pdfs"
RENDERER = "imagemagick" if shutil.which("gs") and shutil.which("convert") else "pdfium"
GOOD = ["issue20489.pdf", "ZapfDingbats.pdf", "issue1002.pdf", "bug886717.pdf"]
BAD = {"encrypted-user-password.pdf": "encrypted", "not-a-pdf.pdf": "not a PDF", "truncated.pdf": "corrupt"}


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def add_pdfs(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(DATA / name, folder / name)


def train(data: Path, models: Path, *flags) -> int:
    code = train_cli.main(["--data", str(data), "--module", "scratch", "--models", str(models),
                           "--image-size", "24", "--epochs", "2", "--progress", "0",
                           "--pdf-renderer", RENDERER, "--log-dir", str(models / "logs"), *flags])
    return code


def test_train_on_images_and_pdfs_mixed(sample_dataset, tmp_path, capsys):
    data, models = tmp_path / "data", tmp_path / "models"
    shutil.copytree(sample_dataset, data)
    add_pdfs(data / "other", GOOD + list(BAD))
    assert train(data, models) == 0
    version_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    metadata = json.loads((version_dir / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
    images = sum(1 for _ in iter_image_files(sample_dataset))
    used = sum(sum(per_class.values()) for per_class in metadata["counts"]["per_split"].values())
    assert used == images + len(GOOD)                      # every good PDF trained on, as its page
    skipped = {Path(s["file"]).name: s["reason"] for s in metadata["counts"]["skipped_files"]}
    assert set(skipped) == set(BAD)
    for name, kind in BAD.items():
        assert skipped[name].startswith(kind), skipped[name]
    pages = list((models / ".cache" / "pages").rglob("*.jpg"))
    assert {p.stem for p in pages} == {sha1(DATA / name) for name in GOOD}

    # A second run renders nothing: the pages come from the cache, keyed by content.
    made = {p: p.stat().st_mtime_ns for p in pages}
    assert train(data, models) == 0
    assert {p: p.stat().st_mtime_ns for p in (models / ".cache" / "pages").rglob("*.jpg")} == made


def test_train_on_folders_of_pdfs_only(tmp_path, capsys):
    data, models = tmp_path / "pdfs", tmp_path / "models"
    add_pdfs(data / "landscape", ["issue20489.pdf", "two-pages.pdf", "xref-command-missing.pdf"])
    add_pdfs(data / "portrait", ["issue1002.pdf", "bug886717.pdf", "encrypted-empty-password.pdf"])
    assert train(data, models, "--validation-percent", "0", "--test-percent", "0") == 0
    version_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    labels = (version_dir / contract.ASSETS_DIR / contract.LABELS_FILE).read_text().split()
    assert labels == ["landscape", "portrait"]


def test_a_missing_renderer_is_named_per_pdf_and_images_still_train(sample_dataset, tmp_path, caplog,
                                                                  monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))      # no gs, no convert
    data, models = tmp_path / "data", tmp_path / "models"
    shutil.copytree(sample_dataset, data)
    add_pdfs(data / "other", ["issue1002.pdf"])
    assert train_cli.main(["--data", str(data), "--module", "scratch", "--models", str(models),
                           "--image-size", "24", "--epochs", "1", "--progress", "0",
                           "--pdf-renderer", "imagemagick", "--log-dir", str(models / "logs")]) == 0
    assert "issue1002.pdf: renderer missing" in caplog.text
    assert "apt-get install ghostscript imagemagick" in caplog.text


# --- validate -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(trained_model):
    from imgclf.serving.process import LocalServer

    with LocalServer(trained_model.base_path, trained_model.model_name) as running:
        yield running


def validate(folder: Path, server, tmp_path: Path, *flags):
    settings = client_cli.parse_settings([str(folder), "--server", server.rest_url, "--wait", "30",
                                          "--pdf-renderer", RENDERER, "--pdf-cache", str(tmp_path / "pages"),
                                          *flags])
    out, err = io.StringIO(), io.StringIO()
    code = Run(settings, out, err).execute()
    return code, out.getvalue(), err.getvalue()


def test_validate_classifies_pdfs_as_their_rendered_pages(server, trained_model, tmp_path):
    import tensorflow as tf

    folder = tmp_path / "check"
    add_pdfs(folder / "other", GOOD)
    results = tmp_path / "results.jsonl"
    code, out, err = validate(folder, server, tmp_path, "--output", str(results))
    assert code == EXIT_OK, err
    scores = {r["path"]: r["scores"] for r in map(json.loads, results.read_text().splitlines())}
    assert set(scores) == {str(folder / "other" / name) for name in GOOD}
    signature = tf.saved_model.load(str(trained_model.version_dir)).signatures[contract.SIGNATURE_NAME]
    for name in GOOD:
        page = next((tmp_path / "pages").rglob(f"{sha1(DATA / name)}.jpg")).read_bytes()
        outputs = signature(**{contract.INPUT_NAME: tf.constant([page])})
        expected = dict(zip([c.decode() for c in outputs[contract.CLASSES_OUTPUT].numpy()[0]],
                            outputs[contract.SCORES_OUTPUT].numpy()[0].tolist()))
        for label, score in expected.items():
            assert scores[str(folder / "other" / name)][label] == pytest.approx(score, abs=1e-5)


def test_validate_gives_bad_pdfs_their_own_line(server, trained_model, tmp_path):
    folder = tmp_path / "check"
    add_pdfs(folder / "other", ["issue1002.pdf", *BAD])
    code, out, err = validate(folder, server, tmp_path)
    assert code == EXIT_FAILED
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == len(BAD)
    for name, kind in BAD.items():
        assert any(name in line and f": {kind}:" in line for line in errors), (name, errors)
    assert any(line.endswith(str(folder / "other" / "issue1002.pdf")) and not line.startswith("ERROR")
               for line in out.splitlines())


def test_rendering_needs_no_tensorflow(tmp_path):
    """The client image has no TensorFlow: rendering a PDF must not import it."""
    script = ("import sys; from pathlib import Path; from imgclf.pdf.store import for_command\n"
              f"with for_command('{RENDERER}', r'{tmp_path}') as pdfs:\n"
              f"    data, why = pdfs.image_bytes(Path(r'{DATA / 'issue1002.pdf'}'))\n"
              "assert data and why is None, why\n"
              "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_publish_measures_the_pdfs_of_the_recorded_held_out_split(tmp_path, capsys, caplog):
    """`make publish` rebuilds the held-out split from the training metadata: PDFs count as their
    pages, rendered as training rendered them (from its cache), and VALIDATE=dir takes PDFs too."""
    from imgclf.rollout.gate import labelled_examples, recorded_held_out

    data, models = tmp_path / "pdfs", tmp_path / "models"
    add_pdfs(data / "landscape", ["issue20489.pdf", "two-pages.pdf", "xref-command-missing.pdf"])
    add_pdfs(data / "portrait", ["issue1002.pdf", "bug886717.pdf", "encrypted-empty-password.pdf"])
    assert train(data, models) == 0          # 15/15 %: the test split is encrypted-empty-password.pdf
    version_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    cached = {p: p.stat().st_mtime_ns for p in (models / ".cache" / "pages").rglob("*.jpg")}

    held_out, note = recorded_held_out(version_dir)
    assert [(image.stem, label) for image, label in held_out] == \
        [(sha1(data / "portrait" / "encrypted-empty-password.pdf"), "portrait")]
    assert held_out[0][0] in cached and note.endswith(": 1 images")
    assert {p: p.stat().st_mtime_ns for p in cached} == cached      # read from training's cache

    # VALIDATE=dir: every PDF as its page, but those training skipped (blank first pages, with the
    # imagemagick renderer two-pages.pdf), skipped again with a warning naming them.
    metadata = json.loads((version_dir / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
    skipped = {Path(s["file"]).name for s in metadata["counts"]["skipped_files"]}
    caplog.clear()
    examples = labelled_examples(data, RENDERER, models / ".cache" / "pages")
    assert sorted((image.stem, label) for image, label in examples) == sorted(
        (sha1(pdf), pdf.parent.name) for pdf in data.rglob("*.pdf") if pdf.name not in skipped)
    assert all(f"{name}: " in caplog.text for name in skipped)


def test_a_pdf_example_names_the_pdf_and_reads_its_page(sample_dataset, tmp_path):
    """The trainer reads a PDF's rendered page, but reports (misclassified files) name the PDF."""
    from imgclf.images import Preprocessing
    from imgclf.pdf import store as pdf_store
    from imgclf.trainer.data import discover
    from imgclf.trainer.features import FileProbe

    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    add_pdfs(data / "other", ["issue1002.pdf"])
    with pdf_store.for_command(RENDERER, tmp_path / "pages") as pdfs:
        dataset = discover(data, 15, 15, FileProbe(Preprocessing(16)), images_of=pdfs.image_paths)
    pdf = [e for e in dataset.examples if e.file.suffix == ".pdf"]
    assert [e.file for e in pdf] == [data / "other" / "issue1002.pdf"]
    assert tmp_path / "pages" in pdf[0].path.parents
    assert pdf[0].path.stem == sha1(DATA / "issue1002.pdf")
    images = [e for e in dataset.examples if e.file.suffix != ".pdf"]
    assert images and all(e.file == e.path and e.source is None for e in images)
