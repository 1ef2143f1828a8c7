"""imgclf: a TensorFlow image classifier trained by transfer learning, served by TensorFlow Serving.

Packages: ``contract`` (the serving contract and version-folder rules), ``settings`` (every
tunable), ``images`` (the one preprocessing function), ``trainer``, ``serving`` (the local
TF-Serving-compatible server), ``client`` and ``rollout``.
"""

__version__ = "0.1.0"
