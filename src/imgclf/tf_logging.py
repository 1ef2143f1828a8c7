"""TensorFlow's own log level, decided once before TensorFlow is imported (the console script
calls this first; LocalServer children run the console script too).

TensorFlow's C++ code logs to stderr at a level set by TF_CPP_MIN_LOG_LEVEL, read when TensorFlow
loads: 0 everything, 1 no INFO, 2 no WARNING, 3 no ERROR either. On a machine without an NVIDIA
driver, every TensorFlow start logs `E ... failed call to cuInit: ... UNKNOWN ERROR (303)` at ERROR
level, which says nothing but "no GPU"; and the other ERROR lines (`OP_REQUIRES failed ...`) repeat
errors that reach Python as exceptions, which the commands report in words. So without a driver the
level is 3; with one it is 2, so that a real CUDA problem shows. A value the user set is kept.
"""

from __future__ import annotations

import glob
import os
from typing import MutableMapping

NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidia[0-9]*")


def nvidia_driver_present() -> bool:
    return any(glob.glob(pattern) for pattern in NVIDIA_DRIVER_FILES)


def quiet_tensorflow_logs(environ: MutableMapping[str, str] | None = None) -> str:
    """Sets TF_CPP_MIN_LOG_LEVEL unless already set; returns the level in force."""
    environ = os.environ if environ is None else environ
    return environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if nvidia_driver_present() else "3")
