"""The validation client: sends image files to a TensorFlow Serving endpoint (REST or gRPC) and
reports per-image predictions, accuracy and latency. The REST path needs only `requests`; the gRPC
path imports tensorflow-serving-api (and so TensorFlow) only when it is chosen."""
