"""The exported model, loaded the way a server loads it, honours the serving contract."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from imgclf import contract
from imgclf.data_folders import split_of
from imgclf.model_store import LocalModelStore


@pytest.fixture(scope="module")
def loaded(trained_model):
    return tf.saved_model.load(str(trained_model.version_dir))


def test_version_is_published_with_contract_files(trained_model):
    store = LocalModelStore(trained_model.base_path)
    assert store.versions() == [trained_model.version]
    assert store.staged() == []
    # The completion marker, written last, lists every file of the export.
    sealed = json.loads((trained_model.version_dir / contract.ASSETS_EXTRA_DIR / contract.SEAL_FILE).read_text())
    assert {"saved_model.pb", "assets/labels.txt", "assets.extra/training_report.json"} <= set(sealed["files"])
    version_dir = trained_model.version_dir
    assert (version_dir / "saved_model.pb").is_file()
    labels_text = (version_dir / contract.ASSETS_DIR / contract.LABELS_FILE).read_text()
    assert contract.parse_labels_file(labels_text) == trained_model.labels == ["other", "research"]
    extra = version_dir / contract.ASSETS_EXTRA_DIR
    metadata = json.loads((extra / contract.METADATA_FILE).read_text())
    assert metadata["module"] == "scratch"
    assert metadata["tensorflow_version"] == tf.__version__
    assert metadata["labels"] == trained_model.labels
    assert sum(metadata["counts"]["per_split"]["train"].values()) > 0
    report = json.loads((extra / contract.REPORT_FILE).read_text())
    assert set(report["splits"]) == {"train", "validation", "test"}
    assert (extra / contract.CONFUSION_MATRIX_PNG).read_bytes().startswith(b"\x89PNG")


def test_signature_matches_contract(loaded):
    signature = loaded.signatures[contract.SIGNATURE_NAME]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == [contract.INPUT_NAME]
    assert inputs[contract.INPUT_NAME].dtype == tf.string
    assert inputs[contract.INPUT_NAME].shape.as_list() == [None]
    outputs = signature.structured_outputs
    assert set(outputs) == {contract.SCORES_OUTPUT, contract.CLASSES_OUTPUT}
    assert outputs[contract.SCORES_OUTPUT].dtype == tf.float32
    assert outputs[contract.CLASSES_OUTPUT].dtype == tf.string


def test_raw_file_bytes_give_probabilities_and_label_names(trained_model, loaded):
    files = sorted((trained_model.data_dir / "research").iterdir())[:3] + \
        sorted((trained_model.data_dir / "other").iterdir())[:2]
    batch = tf.constant([f.read_bytes() for f in files])
    result = loaded.signatures[contract.SIGNATURE_NAME](**{contract.INPUT_NAME: batch})
    scores = result[contract.SCORES_OUTPUT].numpy()
    classes = result[contract.CLASSES_OUTPUT].numpy()
    assert scores.shape == (5, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert (scores >= 0).all()
    assert [[c.decode() for c in row] for row in classes] == [trained_model.labels] * 5


def test_held_out_accuracy_of_the_exported_model(trained_model, loaded):
    metadata = json.loads((trained_model.version_dir / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
    settings = metadata["settings"]
    correct = total = 0
    for label in trained_model.labels:
        for path in sorted((trained_model.data_dir / label).iterdir()):
            if split_of(path.name, settings["validation_percent"], settings["test_percent"]) == "train":
                continue
            result = loaded.signatures[contract.SIGNATURE_NAME](**{contract.INPUT_NAME: tf.constant([path.read_bytes()])})
            predicted = trained_model.labels[int(np.argmax(result[contract.SCORES_OUTPUT].numpy()[0]))]
            correct += predicted == label
            total += 1
    assert total >= 10
    assert correct / total >= 0.9


def test_warmup_records_are_prediction_logs_of_real_images(trained_model, loaded):
    path = trained_model.version_dir / contract.ASSETS_EXTRA_DIR / contract.WARMUP_FILE
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 1 <= len(records) <= contract.MAX_WARMUP_RECORDS
    training_files = {p.read_bytes() for p in trained_model.data_dir.rglob("*") if p.is_file()}
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        request = log.predict_log.request
        assert request.model_spec.signature_name == contract.SIGNATURE_NAME
        tensor = tf.make_ndarray(request.inputs[contract.INPUT_NAME])
        assert tensor.shape == (1,) and tensor[0] in training_files
        # The server replays them: they must run through the signature.
        loaded.signatures[contract.SIGNATURE_NAME](**{contract.INPUT_NAME: tf.constant(tensor)})


def test_a_retrain_on_other_images_exports_the_same_program_with_other_variables(trained_model, tmp_path):
    """What the local server's standby sessions need (serving/standby.py): everything a retrain
    fits (weights, the calibration temperature) is a variable, so its export differs from the
    previous one only in the checkpoint, and the server restores it into a warm session."""
    import shutil

    from imgclf.rollout.training import train_and_publish
    from imgclf.serving.program import program_key
    from imgclf.serving.servable import read_meta_graph
    from imgclf.settings import TrainSettings

    data = tmp_path / "data"
    for folder in sorted(p for p in trained_model.data_dir.iterdir() if p.is_dir()):
        (data / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[5:]:          # other images: other weights and temperature
            shutil.copy(image, data / folder.name / image.name)
    settings = TrainSettings(data=str(data), module="scratch", models=str(tmp_path / "models"), image_size=32,
                             epochs=3, progress=False, cache_dir=str(tmp_path / "cache"),
                             log_dir=str(tmp_path / "logs"))
    retrained = train_and_publish(settings).version_dir
    before, after = trained_model.version_dir, retrained
    assert (before / "variables" / "variables.index").read_bytes() != (after / "variables" / "variables.index").read_bytes() \
        or next((before / "variables").glob("variables.data-*")).read_bytes() != next((after / "variables").glob("variables.data-*")).read_bytes()
    assert program_key(read_meta_graph(before, ["serve"]), before) == program_key(read_meta_graph(after, ["serve"]), after)
