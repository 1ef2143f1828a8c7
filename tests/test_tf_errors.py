"""The one TensorFlow error-message cleaner, on real TensorFlow errors."""

from __future__ import annotations

import pytest

from imgclf.tf_errors import tf_error_message

tf = pytest.importorskip("tensorflow")


def error_of(function, *args) -> str:
    with pytest.raises(tf.errors.OpError) as raised:
        function(*args)
    return raised.value.message


def test_an_eager_op_error_keeps_only_the_kernels_words():
    message = error_of(tf.io.decode_image, tf.constant(b"not an image"))
    assert "[Op:" in message and "{{function_node" in message      # what TensorFlow says
    cleaned = tf_error_message(message)
    assert cleaned.startswith("Unknown image file format") and "[Op:" not in cleaned
    assert "{{function_node" not in cleaned and "\n" not in cleaned


def test_a_saved_model_error_loses_where_it_happened(tmp_path):
    module = tf.Module()
    module.decode = tf.function(lambda data: tf.io.decode_jpeg(data), input_signature=[tf.TensorSpec([], tf.string)])
    tf.saved_model.save(module, str(tmp_path))
    message = error_of(tf.saved_model.load(str(tmp_path)).decode, tf.constant(b"\xff\xd8 broken jpeg"))
    assert message.startswith("Graph execution error:")               # what TensorFlow says
    as_served = tf_error_message(message, one_line=False)
    assert as_served.startswith("Unknown image file format.") and as_served.endswith("\n\t [[{{node DecodeJpeg}}]]")
    assert "Graph execution" not in as_served and "function_node" not in as_served and "[Op:" not in as_served
    for_people = tf_error_message(message)
    assert "[[{{node" not in for_people and "\n" not in for_people and for_people


def test_a_plain_message_is_left_alone():
    assert tf_error_message("Expected one or two output Tensors, found 4") == (
        "Expected one or two output Tensors, found 4")
    assert tf_error_message("line one\n\t [[{{node DecodeJpeg}}]]") == "line one"
