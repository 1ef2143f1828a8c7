"""The local TensorFlow-Serving-compatible model server: same flags, REST and gRPC API, version
polling and warmup as tensorflow_model_server. `LocalServer` (process.py) runs it for tests and
tools; `imgclf serve` (cli.py) is its command line."""

from imgclf.serving.process import LocalServer, ServerStartError

__all__ = ["LocalServer", "ServerStartError"]
