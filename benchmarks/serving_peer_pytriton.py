"""Second peer for benchmarks/serving.py: Triton Inference Server (bundled in nvidia-pytriton 0.7.0)
with its real dynamic batcher, running the same ONNX file through the same ONNX Runtime session settings.

Runs in its own venv (nvidia-pytriton 0.7.0 forces numpy 1.26), made once by hand:
    python3.11 -m venv tools/venv-pytriton
    tools/venv-pytriton/bin/pip install nvidia-pytriton==0.7.0 onnxruntime==1.32.0
serving.py starts it as
    tools/venv-pytriton/bin/python benchmarks/serving_peer_pytriton.py MODEL.onnx HTTP_PORT THREADS MAX_BATCH DELAY_US
with LD_LIBRARY_PATH = the interpreter's LIBDIR (for Triton's Python stub) and PYTRITON_HOME = a writable folder.
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def main() -> None:
    path, http_port, threads, max_batch, delay_us = sys.argv[1], *map(int, sys.argv[2:6])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        (output,) = session.run([model_output.name], {model_input.name: inputs[model_input.name]})
        return {model_output.name: output}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_port=http_port + 1,
        metrics_port=http_port + 2,
        log_verbose=0,
    )
    with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
        triton.bind(
            model_name="bench",
            infer_func=infer,
            inputs=[Tensor(name=model_input.name, dtype=np.float32, shape=tuple(model_input.shape[1:]))],
            outputs=[Tensor(name=model_output.name, dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us)),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
