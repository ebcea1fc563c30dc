"""Drive the server with the official tritonclient (HTTP or gRPC), exactly as a Triton user would.

Runs in the tools venv (tritonclient pins protobuf < 7, so it stays out of the main venv). The pytest
side passes inputs as .npy/.png files and checks the results this script writes as JSON + .npz.

Usage: triton_client_check.py {http|grpc} URL WORKDIR CLASSIFIER DETECTOR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    protocol, url, workdir, classifier, detector = sys.argv[1:6]
    work = Path(workdir)
    if protocol == "http":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(url)
    report: dict[str, object] = {}
    arrays: dict[str, np.ndarray] = {}
    as_json = {} if protocol == "http" else {"as_json": True}

    report["live"] = client.is_server_live()
    report["ready"] = client.is_server_ready()
    report["model_ready"] = client.is_model_ready(classifier)
    metadata = client.get_server_metadata(**as_json)
    report["extensions"] = metadata["extensions"]
    model_metadata = client.get_model_metadata(classifier, **as_json)
    report["inputs"] = model_metadata["inputs"]
    report["outputs"] = model_metadata["outputs"]
    config = client.get_model_config(classifier, **as_json)
    config = config.get("config", config)
    report["max_batch_size"] = int(config["max_batch_size"])
    report["config_inputs"] = [i["name"] for i in config["input"]]

    pixels = np.load(work / "pixels.npy")

    # 1. Binary FP32 input, binary output (tritonclient's defaults over HTTP).
    tensor = client_module.InferInput("pixel_values", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    result = client.infer(classifier, [tensor], outputs=[client_module.InferRequestedOutput("logits")],
                          request_id="check-1")
    arrays["logits_binary"] = result.as_numpy("logits")
    report["response_id"] = result.get_response()["id"] if protocol == "http" else result.get_response().id

    # 2. JSON input and JSON output (HTTP only: gRPC has no JSON form).
    if protocol == "http":
        tensor = client_module.InferInput("pixel_values", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=False)
        wanted = client_module.InferRequestedOutput("logits", binary_data=False)
        arrays["logits_json"] = client.infer(classifier, [tensor], outputs=[wanted]).as_numpy("logits")

    # 3. Classification extension: top-3 "value:index:label" strings.
    tensor = client_module.InferInput("pixel_values", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    ranked = client.infer(classifier, [tensor], outputs=[client_module.InferRequestedOutput("logits", class_count=3)])
    report["top3"] = [[v.decode() for v in row] for row in ranked.as_numpy("logits")]

    # 4. Encoded images as a BYTES tensor, decoded and preprocessed by the server.
    images = [p.read_bytes() for p in sorted(work.glob("image*.png"))]
    encoded = np.array(images, dtype=np.object_)
    tensor = client_module.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(encoded)
    arrays["logits_from_images"] = client.infer(classifier, [tensor]).as_numpy("logits")

    # 5. Detection: per image D padded rows and how many of them are real.
    scene = np.load(work / "scene.npy")
    tensor = client_module.InferInput("pixel_values", list(scene.shape), "FP32")
    tensor.set_data_from_numpy(scene)
    detection = client.infer(detector, [tensor])
    for name in ("boxes", "scores", "labels", "mask_probs", "num_detections"):
        arrays[f"det_{name}"] = detection.as_numpy(name)

    # 6. Errors come back as InferenceServerException with the server's message.
    errors = {}
    bad = client_module.InferInput("pixel_values", [1, 3, 8, 8], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
    for case, call in {
        "wrong_shape": lambda: client.infer(classifier, [bad]),
        "unknown_model": lambda: client.get_model_metadata("no-such-model"),
        "unknown_output": lambda: client.infer(classifier, [tensor_for(client_module, pixels)],
                                               outputs=[client_module.InferRequestedOutput("nope")]),
    }.items():
        try:
            call()
            errors[case] = None
        except InferenceServerException as exc:
            errors[case] = exc.message()
    report["errors"] = errors

    stats = client.get_inference_statistics(classifier, **as_json)
    model_stats = stats["model_stats"][0]
    report["stats"] = {"inference_count": int(model_stats["inference_count"]),
                       "execution_count": int(model_stats["execution_count"])}

    (work / f"report-{protocol}.json").write_text(json.dumps(report))
    np.savez(work / f"arrays-{protocol}.npz", **arrays)


def tensor_for(client_module, pixels: np.ndarray):
    tensor = client_module.InferInput("pixel_values", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    return tensor


if __name__ == "__main__":
    main()
