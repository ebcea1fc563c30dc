"""KServe v2 / Open Inference Protocol (placeholder; filled in below)."""

from fastapi import APIRouter

router = APIRouter(tags=["kserve-v2"])
