"""Remote backend: a model on another KServe-v2 server (Triton, or another PaCa Serve) for scale-out.

It speaks the v2 HTTP protocol with binary tensors through httpx (no tritonclient in the main venv).
Options: url (required, e.g. http://triton:8000), model (remote name; default: this model's name),
version, timeout_s (default 60). The model's self-description (paca.* metadata) comes from the remote
/config `parameters` (PaCa Serve and `paca export-triton` repositories put it there) or, failing that,
from the local ONNX `artifact`.

Remote failures keep their meaning for the client: a remote 400/413 is the request's fault and is
answered the same; a full remote queue (503) is a 503 with the remote's Retry-After; a remote 504 or no
answer within timeout_s is a 504; anything else, and a remote that cannot be reached, is a 502 naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import httpx
import numpy as np

from export.metadata import onnx_props
from export.triton_config import metadata_from_parameters
from service import tracing
from service.backends.base import V2_DATATYPES, Backend, TensorSpec
from service.errors import BadGateway, BadRequest, GatewayTimeout, PayloadTooLarge, QueueFull, ServiceError
from service.repository import ModelConfig

HEADER_LENGTH = "Inference-Header-Content-Length"


class RemoteInferenceError(RuntimeError):
    """The remote server answered with an error."""


class RemoteTritonBackend(Backend):
    name = "triton"
    platform = "remote_kserve_v2"
    partial_metadata = True

    def __init__(self, config: ModelConfig, instance_index: int = 0) -> None:
        options = config.options
        self.remote_model = str(options.get("model", config.name))
        self.version = str(options.get("version", ""))
        base = f"/v2/models/{self.remote_model}" + (f"/versions/{self.version}" if self.version else "")
        self.client = httpx.Client(base_url=str(options["url"]).rstrip("/"),
                                   timeout=float(options.get("timeout_s", 60.0)))
        self._infer_path = f"{base}/infer"
        metadata = self._get(base)
        remote_config = self._get(f"{base}/config")
        self._inputs = [TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                        for t in metadata["inputs"]]
        self._outputs = [TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                         for t in metadata["outputs"]]
        self._metadata = metadata_from_parameters(remote_config.get("parameters") or {})
        if "paca.preprocess" not in self._metadata:
            if config.artifact is None:
                raise ValueError(f"model {config.name!r}: the remote config has no paca.* parameters; give the "
                                 "local ONNX 'artifact' so the service knows the task, preprocessing and labels")
            self._metadata = onnx_props(config.artifact)

    def _get(self, path: str) -> dict:
        response = self.client.get(path)
        if response.status_code != 200:
            raise RemoteInferenceError(f"GET {path}: {response.status_code} {_error_text(response)}")
        return response.json()

    def infer(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        tensors, chunks = [], []
        for name, array in inputs.items():
            data = np.ascontiguousarray(array, dtype=np.float32).astype("<f4", copy=False).tobytes()
            tensors.append({"name": name, "datatype": "FP32", "shape": list(array.shape),
                            "parameters": {"binary_data_size": len(data)}})
            chunks.append(data)
        header = json.dumps({"inputs": tensors, "outputs": [
            {"name": name, "parameters": {"binary_data": True}} for name in output_names]}).encode()
        try:
            headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
            tracing.inject(headers)  # the batch's span goes on to the remote server (a no-op without tracing)
            response = self.client.post(self._infer_path, content=header + b"".join(chunks), headers=headers)
        except httpx.TimeoutException:
            raise GatewayTimeout(f"remote model {self.remote_model!r} at {self.client.base_url} did not answer "
                                 f"within {self.client.timeout.read:g} s") from None
        except httpx.TransportError as exc:
            raise BadGateway(f"remote model {self.remote_model!r}: cannot reach {self.client.base_url}: "
                             f"{type(exc).__name__}") from None
        if response.status_code != 200:
            raise remote_error(self.remote_model, response)
        return _decode_response(response)


def _decode_response(response: httpx.Response) -> dict[str, np.ndarray]:
    body = response.content
    length = response.headers.get(HEADER_LENGTH)
    header = json.loads(body[: int(length)] if length is not None else body)
    offset = int(length) if length is not None else len(body)
    outputs = {}
    for output in header["outputs"]:
        dtype = V2_DATATYPES[output["datatype"]].newbyteorder("<")
        shape = output["shape"]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            array = np.frombuffer(body[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
        else:
            array = np.asarray(output["data"], dtype=dtype).reshape(shape)
        outputs[output["name"]] = array.astype(dtype.newbyteorder("="))
    return outputs


def remote_error(model: str, response: httpx.Response) -> ServiceError:
    """The service error that tells the client what the remote answer meant."""
    message = f"remote model {model!r} answered {response.status_code}: {_error_text(response)}"
    status = response.status_code
    if status in (400, 422):
        return BadRequest(message)
    if status == 413:
        return PayloadTooLarge(message)
    if status == 503:
        retry_after = response.headers.get("retry-after", "1")
        return QueueFull(message, retry_after_s=int(retry_after) if retry_after.isdigit() else 1)
    if status == 504:
        return GatewayTimeout(message)
    return BadGateway(message)


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]

