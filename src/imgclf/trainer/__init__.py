"""The trainer: class folders in, a published, servable SavedModel version out.

`pipeline.train(TrainSettings(...))` is the library entry point; `cli.main` is `imgclf train`.
"""

import os

# tensorflow_hub's KerasLayer needs Keras 2 (tf_keras); this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
