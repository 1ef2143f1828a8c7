"""imgclf: a TensorFlow image classifier trained by transfer learning, served by TensorFlow Serving.

Packages: ``contract`` (the serving contract and version-folder rules), ``settings`` (every
tunable), ``images`` (the one preprocessing function), ``trainer``, ``serving`` (the local
TF-Serving-compatible server), ``client`` and ``rollout``.
"""

# The one version string: pyproject.toml reads it (dynamic version), and the images built by
# imgclf.stack are tagged with it (docker-compose.yml gets their names from the variables it sets).
__version__ = "0.1.0"
