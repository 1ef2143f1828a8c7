#!/bin/bash
# The official tensorflow/serving image's entrypoint contract, served by `imgclf serve`: the same
# environment (MODEL_NAME, MODEL_BASE_PATH), ports (gRPC 8500, REST 8501) and extra flags after the
# image. It binds 0.0.0.0 because, as in the official image, the container's ports are what compose
# publishes (on 127.0.0.1 by default).
exec imgclf serve --serving=local --host=0.0.0.0 --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
