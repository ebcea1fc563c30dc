"""A peer for benchmarks/serving.py: LitServe with its own dynamic batching around the same ONNX Runtime session.

POST /predict, multipart field `tensor` = the raw little-endian float32 bytes of one (1, 3, H, W) tensor → the
first output's bytes, base64 in JSON (LitServe answers JSON). Started by serving.py as:
    python benchmarks/serving_peer_litserve.py MODEL.onnx PORT THREADS MAX_BATCH DELAY_MS
"""

from __future__ import annotations

import base64
import sys

import litserve as ls
import numpy as np
import onnxruntime as ort


class OnnxAPI(ls.LitAPI):
    def __init__(self, model_path: str, threads: int, max_batch: int, delay_s: float) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=delay_s)
        self.model_path, self.threads = model_path, threads

    def setup(self, device: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.model_path, options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name, self.output_name = model_input.name, self.session.get_outputs()[0].name
        self.sample_shape = [d if isinstance(d, int) else 224 for d in model_input.shape[1:]]

    def decode_request(self, request):
        return np.frombuffer(request["tensor"].file.read(), dtype="<f4").reshape(self.sample_shape)

    def batch(self, inputs):
        return np.stack(inputs)

    def predict(self, x):
        (output,) = self.session.run([self.output_name], {self.input_name: x})
        return output

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"output": base64.b64encode(np.ascontiguousarray(output, dtype="<f4").tobytes()).decode()}


if __name__ == "__main__":
    path, port, threads, max_batch, delay_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
        float(sys.argv[5])
    server = ls.LitServer(OnnxAPI(path, threads, max_batch, delay_ms / 1000), accelerator="cpu", workers_per_device=1,
                          timeout=120)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)
