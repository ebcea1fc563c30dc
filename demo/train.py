"""Seeded CPU training of the three demo models on the demo data (`paca train-demo`).

Inputs are normalised with the arch's own PreprocessSpec mean/std, exactly what the service applies
to an uploaded image of the native demo size, so served answers match the offline figures.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file
from torch import nn

from demo import data
from models.demo.archs import DIGIT_SIZE, SCENE_HW, weights_path
from models.registry import get_arch

CURRICULUM_EPOCHS = 4
# Background covers ~90% of a scene's pixels; at full weight the short CPU schedule ends predicting
# background everywhere, so digit pixels count 5× as much.
SEG_CLASS_WEIGHTS = torch.tensor([0.2] + [1.0] * 10)
ProgressHook = Callable[[int, int, float], None]  # (step, total, loss)


@dataclass(frozen=True)
class TrainPlan:
    """How long and how hard one demo model trains; defaults fit the 2-core CPU budget."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.05
    warmup_steps: int = 50
    train_scenes: int = 0  # scene pool size (scene models only)
    # Scene models start from the trained classifier's backbone (same PaCa config), the demo's stand-in
    # for ImageNet pre-training. Detection keeps it frozen: FPN and RoI heads learn on top, which fits
    # the 2-core budget that training a whole Mask R-CNN would not.
    backbone_from: str | None = None
    freeze_backbone: bool = False


PLANS: dict[str, TrainPlan] = {
    "demo_digits_cls": TrainPlan(steps=1500, batch_size=64, learning_rate=2e-3),
    "demo_digits_seg": TrainPlan(
        steps=1500, batch_size=8, learning_rate=4e-3, warmup_steps=20, train_scenes=1500,
        backbone_from="demo_digits_cls", freeze_backbone=True,
    ),
    "demo_digits_det": TrainPlan(
        steps=500, batch_size=2, learning_rate=2e-3, warmup_steps=15, train_scenes=1000,
        backbone_from="demo_digits_cls", freeze_backbone=True,
    ),
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_input(images: np.ndarray, arch: str) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 normalised with the arch's preprocessing spec."""
    spec = get_arch(arch).preprocess
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (pixels - mean) / std


def _schedule(plan: TrainPlan) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 5% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < plan.warmup_steps:
            return (step + 1) / plan.warmup_steps
        progress = (step - plan.warmup_steps) / max(1, plan.steps - plan.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _optimise(
    model: nn.Module,
    plan: TrainPlan,
    batches: Iterator[object],
    loss_of: Callable[[nn.Module, object], torch.Tensor],
    on_step: ProgressHook | None,
) -> list[float]:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=plan.learning_rate, weight_decay=plan.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(plan))
    model.train()
    losses = []
    for step in range(plan.steps):
        loss = loss_of(model, next(batches))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, 5.0)
        optimiser.step()
        scheduler.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, plan.steps, losses[-1])
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------------
# Batches


def digit_batches(batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches of training digits, re-rendered with new colours every epoch.

    Curriculum: the colour strength ramps 0.25 → 1 over the first four epochs (see `data.render_digit`).
    """
    epoch = 0
    while True:
        colour = min(1.0, (epoch + 1) / CURRICULUM_EPOCHS)
        images, labels = data.digit_images("train", seed=seed * 1000 + epoch + 1, side=DIGIT_SIZE, colour=colour)
        order = np.random.default_rng((seed, epoch)).permutation(len(labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = order[start : start + batch_size]
            yield to_input(images[chosen], "demo_digits_cls"), torch.from_numpy(labels[chosen])
        epoch += 1


def scene_batches(pool: list[data.Scene], batch_size: int, seed: int) -> Iterator[list[data.Scene]]:
    """Endless shuffled batches of pre-rendered training scenes (no mirroring: digits are chiral)."""
    epoch = 0
    while True:
        order = np.random.default_rng((seed, epoch, 7)).permutation(len(pool))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [pool[i] for i in order[start : start + batch_size]]
        epoch += 1


# ---------------------------------------------------------------------------------------------------
# Losses per task


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    pixels, labels = batch
    return F.cross_entropy(model(pixels), labels, label_smoothing=0.05)


def segmentation_loss(model: nn.Module, batch: list[data.Scene]) -> torch.Tensor:
    """Cross-entropy of the 1/4-resolution logits upsampled to the full scene, as mmseg trains."""
    pixels = to_input(np.stack([s.image for s in batch]), "demo_digits_seg")
    target = torch.from_numpy(np.stack([s.semantic_map() for s in batch]).astype(np.int64))
    logits = F.interpolate(model(pixels), size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, target, weight=SEG_CLASS_WEIGHTS)


def detection_loss(model: nn.Module, batch: list[data.Scene]) -> torch.Tensor:
    """Sum of the Mask R-CNN losses (RPN, box head, mask head) in torchvision's training convention."""
    pixels = to_input(np.stack([s.image for s in batch]), "demo_digits_det")
    targets = [
        {
            "boxes": torch.from_numpy(s.boxes),
            "labels": torch.from_numpy(s.labels) + 1,  # torchvision reserves 0 for background
            "masks": torch.from_numpy(s.masks.astype(np.uint8)),
        }
        for s in batch
    ]
    losses = model(list(pixels), targets)
    return sum(losses.values())


# ---------------------------------------------------------------------------------------------------
# Entry points


def build_untrained(arch: str, seed: int) -> nn.Module:
    seed_everything(seed)
    return get_arch(arch).factory()


def paca_body(model: nn.Module) -> nn.Module:
    """The PaCa-ViT inside a demo model (segmentor: `.backbone`, Mask R-CNN: `.backbone.body`)."""
    backbone = model.backbone
    return backbone.body if hasattr(backbone, "body") else backbone


def adopt_backbone(model: nn.Module, classifier_weights: Path, freeze: bool) -> None:
    """Load the trained classifier's PaCa-ViT weights (minus its head) into `model`'s backbone."""
    state = {k: v for k, v in load_file(str(classifier_weights)).items() if not k.startswith("head.")}
    body = paca_body(model)
    body.load_state_dict(state, strict=True)
    for parameter in body.parameters():
        parameter.requires_grad_(not freeze)


def train_arch(
    arch: str,
    seed: int = 0,
    plan: TrainPlan | None = None,
    on_step: ProgressHook | None = None,
    weights_dir: Path | None = None,
):
    """Train one demo arch (from scratch, or on a frozen trained backbone); returns (eval model, losses)."""
    plan = plan or PLANS[arch]
    model = build_untrained(arch, seed)
    if plan.backbone_from is not None:
        source = weights_path(plan.backbone_from)
        if weights_dir is not None:
            source = weights_dir / source.name
        if not source.exists():
            raise FileNotFoundError(f"{arch} builds on {plan.backbone_from}; train that first ({source})")
        adopt_backbone(model, source, plan.freeze_backbone)
    if arch == "demo_digits_cls":
        batches: Iterator[object] = digit_batches(plan.batch_size, seed)
        loss_of: Callable[[nn.Module, object], torch.Tensor] = classification_loss  # type: ignore[assignment]
    else:
        pool = data.scenes("train", plan.train_scenes, seed=seed, hw=SCENE_HW)
        batches = scene_batches(pool, plan.batch_size, seed)
        loss_of = segmentation_loss if arch == "demo_digits_seg" else detection_loss  # type: ignore[assignment]
    losses = _optimise(model, plan, batches, loss_of, on_step)
    return model, losses


def save_weights(model: nn.Module, path: Path) -> None:
    """Float16 safetensors (half the size to commit); loading casts back to the model's float32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in state.items()}
    save_file(tensors, str(path))


def load_trained(arch: str, path: Path | None = None) -> nn.Module:
    """The demo model with its trained weights (strict key match), in eval mode."""
    model = get_arch(arch).factory()
    model.load_state_dict(load_file(str(path or weights_path(arch))), strict=True)
    return model.eval()


def train_and_save(arches: list[str], seed: int = 0, output_dir: Path | None = None) -> dict[str, float]:
    """Train each arch with a rich progress bar and save its weights; returns seconds per arch."""
    seconds: dict[str, float] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"))
    with Progress(*columns) as progress:
        for arch in arches:
            task = progress.add_task(arch, total=PLANS[arch].steps, loss=float("nan"))

            def report(step: int, total: int, loss: float, task: int = task, arch: str = arch) -> None:
                progress.update(task, completed=step, loss=loss)
                if not progress.console.is_terminal and step % max(1, total // 10) == 0:
                    progress.console.print(f"{arch}: step {step}/{total} loss {loss:.4f}")  # logs, CI

            started = time.perf_counter()
            model, _ = train_arch(arch, seed=seed, on_step=report, weights_dir=output_dir)
            seconds[arch] = time.perf_counter() - started
            target = (output_dir / f"{arch}.safetensors") if output_dir else weights_path(arch)
            save_weights(model, target)
    return seconds
