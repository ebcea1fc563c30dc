"""HTTP APIs: the task REST API (/v1) and the KServe v2 / Open Inference Protocol (/v2)."""
