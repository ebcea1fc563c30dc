"""The peer for benchmarks/serving.py: the naive way to serve an ONNX model — FastAPI around one
ONNX Runtime session, no batching, no queue, inference in the default thread pool.

POST /infer with the raw little-endian float32 bytes of one (1, 3, H, W) tensor → the first output's raw bytes.
Started by serving.py as:  python benchmarks/serving_peer_fastapi.py MODEL.onnx PORT THREADS
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool


def create_app(model_path: str, intra_op_threads: int) -> FastAPI:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in model_input.shape]
    first_output = session.get_outputs()[0].name
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/infer")
    async def infer(request: Request) -> Response:
        tensor = np.frombuffer(await request.body(), dtype="<f4").reshape(shape)
        (output,) = await run_in_threadpool(session.run, [first_output], {model_input.name: tensor})
        return Response(output.astype("<f4").tobytes(), media_type="application/octet-stream")

    return app


if __name__ == "__main__":
    path, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    uvicorn.run(create_app(path, threads), host="127.0.0.1", port=port, log_level="warning", access_log=False)
