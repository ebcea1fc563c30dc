"""Seeded CPU training of the three demo models on the demo data (`paca train-demo`).

Inputs are resized and normalised with the arch's own PreprocessSpec, exactly what the service applies
to an uploaded image, so served answers match the offline figures. Training scenes come from
`demo.augment` (more and harder than the held-out ones); every step is seeded, so a run is reproducible.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file
from torch import nn

from demo import augment, calibrate, data
from models.demo.archs import BACKBONE_PRETRAINING, DIGIT_SIZE, SCENE_HW, build_backbone_pretraining, weights_path
from models.preprocess import RESAMPLING
from models.registry import get_arch

CURRICULUM_EPOCHS = 4
# Background covers ~90% of a scene's pixels; at full weight the model is slow to leave "background
# everywhere", and on thin strokes it stays too shy: digit pixels count twice as much (the argmax then
# calls a pixel a digit from about p = 1/3, which also keeps each digit's label in the majority).
SEG_CLASS_WEIGHTS = torch.tensor([0.5] + [1.0] * 10)
SMALL_DIGIT_AREA = 150.0  # ink pixels of a digit about 24 px tall: the unit of `TrainPlan.small_digit_power`
SMALL_DIGIT_WEIGHT_RANGE = (0.5, 3.0)
IGNORE_INDEX = 255  # padding in segmentation targets
# Thin strokes make the 28×28 masks the detector's weakest output (box IoU ≈ 0.9, mask IoU 0.6–0.8 on a
# first schedule): the mask loss counts twice.
DET_MASK_LOSS_WEIGHT = 2.0
ProgressHook = Callable[[int, int, float], None]  # (step, total, loss)
CalibrationHook = Callable[[calibrate.Calibration], None]


@dataclass(frozen=True)
class TrainPlan:
    """How long and how hard one demo model trains."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.05
    warmup_steps: int = 50
    train_scenes: int = 0  # scene pool size (scene models only)
    # Scene models start from a trained digit classifier's PaCa body (BACKBONE_PRETRAINING, same config),
    # the demo's stand-in for ImageNet pre-training, and fine-tune it (or keep it frozen, the cheapest schedule).
    backbone_from: str | None = None
    freeze_backbone: bool = False
    distort: bool = False  # classifier: vary digit shapes every epoch (`data.distort_digit`)
    backbone_lr_scale: float = 1.0  # scene models: learning rate of the adopted backbone relative to the rest
    ema_decay: float = 0.0  # > 0: the saved weights are this exponential moving average of the trained ones
    calibration_scenes: int = 0  # scene models: > 0 tunes an output-logit offset on this many scenes (demo.calibrate)
    # Segmenter: digit pixels weigh (SMALL_DIGIT_AREA / digit area) ** power (clipped to 0.5–3) instead of 1,
    # so a 16-px digit counts about as much as a 56-px one in the loss, as it does in the majority figure.
    small_digit_power: float = 0.0
    # A follow-on stage: trains on from this stage's weights with a fresh optimiser and schedule (its own
    # steps, learning rate and loss settings) and the next seed's batch order over the same scene pool.
    then: TrainPlan | None = None

    @property
    def total_steps(self) -> int:
        return self.steps + (self.then.total_steps if self.then is not None else 0)


PLANS: dict[str, TrainPlan] = {
    BACKBONE_PRETRAINING: TrainPlan(steps=5000, batch_size=64, learning_rate=1e-3, distort=True, ema_decay=0.999),
    "demo_digits_cls": TrainPlan(steps=10000, batch_size=64, learning_rate=1e-3, distort=True, ema_decay=0.999),
    "demo_digits_seg": TrainPlan(
        steps=12000, batch_size=4, learning_rate=1e-3, warmup_steps=200, train_scenes=12000,
        backbone_from=BACKBONE_PRETRAINING, backbone_lr_scale=0.5, calibration_scenes=calibrate.CALIBRATION_SCENES,
        then=TrainPlan(
            steps=4000, batch_size=4, learning_rate=3e-4, warmup_steps=100, backbone_lr_scale=0.5,
            small_digit_power=0.5,
        ),
    ),
    "demo_digits_det": TrainPlan(
        steps=4000, batch_size=4, learning_rate=1e-3, warmup_steps=200, train_scenes=4000,
        backbone_from=BACKBONE_PRETRAINING, backbone_lr_scale=0.5, calibration_scenes=calibrate.CALIBRATION_SCENES,
        then=TrainPlan(steps=2000, batch_size=4, learning_rate=3e-4, warmup_steps=100, backbone_lr_scale=0.5),
    ),
}
# What `paca train-demo` trains, in this order: each model's `backbone_from` comes before it.
TRAINING_ORDER = tuple(PLANS)
DIGIT_TARGETS = (BACKBONE_PRETRAINING, "demo_digits_cls")  # trained on single digits, the rest on scenes
# `paca train-demo --quick`: the same code path in about a minute, for CI smoke runs; the weights are
# far from the committed ones and only prove that training runs end to end.
QUICK_PLANS: dict[str, TrainPlan] = {
    arch: dataclasses.replace(
        plan, steps=20, warmup_steps=5, train_scenes=min(plan.train_scenes, 16),
        calibration_scenes=min(plan.calibration_scenes, 8),
        then=dataclasses.replace(plan.then, steps=10, warmup_steps=2) if plan.then is not None else None,
    )
    for arch, plan in PLANS.items()
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_input(images: np.ndarray, arch: str) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 normalised with the arch's preprocessing spec.

    An arch with an exact input size gets each image resized to it first, by the service's own resize
    (Pillow, the spec's interpolation), so offline figures see what served requests see.
    """
    spec = get_arch(arch).preprocess
    if spec.resize_mode == "exact" and tuple(images.shape[1:3]) != tuple(spec.size):
        size = (spec.size[1], spec.size[0])
        images = np.stack([np.asarray(Image.fromarray(i).resize(size, RESAMPLING[spec.interpolation])) for i in images])
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


def _param_groups(model: nn.Module, plan: TrainPlan) -> list[dict[str, object]]:
    """Trainable parameters; a scene model's adopted PaCa body at `backbone_lr_scale` × the learning rate."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if plan.backbone_lr_scale == 1.0 or not hasattr(model, "backbone"):
        return [{"params": trainable}]
    body = {id(p) for p in paca_body(model).parameters()}
    return [
        {"params": [p for p in trainable if id(p) not in body]},
        {"params": [p for p in trainable if id(p) in body], "lr": plan.learning_rate * plan.backbone_lr_scale},
    ]


def _optimise(
    model: nn.Module,
    plan: TrainPlan,
    batches: Iterator[object],
    loss_of: Callable[[nn.Module, object], torch.Tensor],
    on_step: ProgressHook | None,
) -> list[float]:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(_param_groups(model, plan), lr=plan.learning_rate, weight_decay=plan.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(plan))
    average = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(plan.ema_decay), use_buffers=True
        )
        if plan.ema_decay > 0 else None
    )
    model.train()
    losses = []
    for step in range(plan.steps):
        loss = loss_of(model, next(batches))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, 5.0)
        optimiser.step()
        scheduler.step()
        if average is not None:
            average.update_parameters(model)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, plan.steps, losses[-1])
    if average is not None:
        model.load_state_dict(average.module.state_dict())
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------------
# Batches


def digit_batches(
    batch_size: int, seed: int, distort: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches of training digits, re-rendered (new colours, new shapes) every epoch.

    Curriculum: the colour strength ramps 0.25 → 1 over the first four epochs (see `data.render_digit`).
    """
    epoch = 0
    while True:
        colour = min(1.0, (epoch + 1) / CURRICULUM_EPOCHS)
        images, labels = data.digit_images(
            "train", seed=seed * 1000 + epoch + 1, side=DIGIT_SIZE, colour=colour, distort=distort
        )
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


def padded_inputs(batch: list[data.Scene], arch: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes of up to SCENE_HW → normalised inputs padded bottom/right with 0 (the service's pad value)
    to SCENE_HW, and their semantic maps padded with IGNORE_INDEX."""
    pixels = torch.zeros(len(batch), 3, *SCENE_HW)
    target = torch.full((len(batch), *SCENE_HW), IGNORE_INDEX, dtype=torch.int64)
    for row, item in enumerate(batch):
        height, width = item.image.shape[:2]
        pixels[row, :, :height, :width] = to_input(item.image[None], arch)[0]
        target[row, :height, :width] = torch.from_numpy(item.semantic_map().astype(np.int64))
    return pixels, target


def pixel_weights(batch: list[data.Scene], target: torch.Tensor, small_digit_power: float) -> torch.Tensor:
    """Per-pixel loss weights: SEG_CLASS_WEIGHTS by target class, and with `small_digit_power` > 0 each
    digit's pixels weighted by its size instead (small digits up, large ones down); padding 0."""
    weights = SEG_CLASS_WEIGHTS[target.clamp(max=len(SEG_CLASS_WEIGHTS) - 1)]
    weights[target == IGNORE_INDEX] = 0.0
    if small_digit_power:
        for row, item in enumerate(batch):
            height, width = item.image.shape[:2]
            for mask in item.masks:
                weight = np.clip((SMALL_DIGIT_AREA / mask.sum()) ** small_digit_power, *SMALL_DIGIT_WEIGHT_RANGE)
                weights[row, :height, :width][torch.from_numpy(mask)] = float(weight)
    return weights


def segmentation_loss(model: nn.Module, batch: list[data.Scene], small_digit_power: float = 0.0) -> torch.Tensor:
    """Pixel-weighted cross-entropy of the 1/4-resolution logits upsampled to the full scene (as mmseg
    trains); the weights are `pixel_weights`."""
    pixels, target = padded_inputs(batch, "demo_digits_seg")
    logits = F.interpolate(model(pixels), size=target.shape[-2:], mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    weights = pixel_weights(batch, target, small_digit_power)
    return (per_pixel * weights).sum() / weights.sum()


def detection_loss(model: nn.Module, batch: list[data.Scene]) -> torch.Tensor:
    """Sum of the Mask R-CNN losses (RPN, box head, mask head) in torchvision's training convention,
    the mask loss weighted by DET_MASK_LOSS_WEIGHT."""
    pixels = [to_input(s.image[None], "demo_digits_det")[0] for s in batch]  # padded by the model's batching
    targets = [
        {
            "boxes": torch.from_numpy(s.boxes),
            "labels": torch.from_numpy(s.labels) + 1,  # torchvision reserves 0 for background
            "masks": torch.from_numpy(s.masks.astype(np.uint8)),
        }
        for s in batch
    ]
    losses = model(pixels, targets)
    return sum(value * (DET_MASK_LOSS_WEIGHT if name == "loss_mask" else 1.0) for name, value in losses.items())


# ---------------------------------------------------------------------------------------------------
# Entry points


def _factory(arch: str) -> Callable[[], nn.Module]:
    return build_backbone_pretraining if arch == BACKBONE_PRETRAINING else get_arch(arch).factory


def build_untrained(arch: str, seed: int) -> nn.Module:
    seed_everything(seed)
    return _factory(arch)()


def training_chain(arch: str) -> list[str]:
    """`arch` preceded by whatever it builds on that has no weights yet (what `paca demo ensure` trains)."""
    source = PLANS[arch].backbone_from
    before = training_chain(source) if source is not None and not weights_path(source).exists() else []
    return [*before, arch]


def paca_body(model: nn.Module) -> nn.Module:
    """The PaCa-ViT inside a demo model (segmentor: `.backbone`, Mask R-CNN: `.backbone.body`)."""
    backbone = model.backbone
    return backbone.body if hasattr(backbone, "body") else backbone


def adopt_backbone(model: nn.Module, classifier_weights: Path, freeze: bool) -> None:
    """Load a trained digit classifier's PaCa-ViT weights (minus its head) into `model`'s backbone."""
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
    on_calibrated: CalibrationHook | None = None,
):
    """Train one demo arch (from scratch, or on a pre-trained digit classifier's body) and calibrate a scene
    model's output offset when its plan asks; returns (eval model, losses)."""
    plan = plan or PLANS[arch]
    model = build_untrained(arch, seed)
    if plan.backbone_from is not None:
        source = weights_path(plan.backbone_from)
        if weights_dir is not None:
            source = weights_dir / source.name
        if not source.exists():
            raise FileNotFoundError(f"{arch} builds on {plan.backbone_from}; train that first ({source})")
        adopt_backbone(model, source, plan.freeze_backbone)
    pool = [augment.training_scene(index, seed, SCENE_HW) for index in range(plan.train_scenes)]
    losses: list[float] = []
    stage: TrainPlan | None = plan
    stage_seed = seed
    while stage is not None:
        done = len(losses)

        def stage_step(step: int, _total: int, loss: float, done: int = done) -> None:
            if on_step is not None:
                on_step(done + step, plan.total_steps, loss)

        batches, loss_of = _stage_data(arch, stage, stage_seed, pool)
        losses += _optimise(model, stage, batches, loss_of, stage_step)
        stage, stage_seed = stage.then, stage_seed + 1
    if plan.calibration_scenes:
        chosen = calibrate.calibrate_arch(arch, model, plan.calibration_scenes)
        if chosen is not None and on_calibrated is not None:
            on_calibrated(chosen)
    return model, losses


def _stage_data(
    arch: str, stage: TrainPlan, seed: int, pool: list[data.Scene]
) -> tuple[Iterator[object], Callable[[nn.Module, object], torch.Tensor]]:
    """One stage's endless batches and loss function."""
    if arch in DIGIT_TARGETS:
        return digit_batches(stage.batch_size, seed, stage.distort), classification_loss  # type: ignore[return-value]
    batches = scene_batches(pool, stage.batch_size, seed)
    if arch == "demo_digits_seg":
        return batches, functools.partial(segmentation_loss, small_digit_power=stage.small_digit_power)  # type: ignore[return-value]
    return batches, detection_loss  # type: ignore[return-value]


def save_weights(model: nn.Module, path: Path) -> None:
    """Float16 safetensors (half the size to commit); loading casts back to the model's float32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in state.items()}
    save_file(tensors, str(path))


def load_trained(arch: str, path: Path | None = None) -> nn.Module:
    """The demo model with its trained weights (strict key match), in eval mode."""
    model = _factory(arch)()
    model.load_state_dict(load_file(str(path or weights_path(arch))), strict=True)
    return model.eval()


def train_and_save(
    arches: list[str], seed: int = 0, output_dir: Path | None = None, plans: dict[str, TrainPlan] | None = None
) -> dict[str, float]:
    """Train each arch with a rich progress bar and save its weights; returns seconds per arch."""
    plans = plans or PLANS
    seconds: dict[str, float] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"))
    with Progress(*columns) as progress:
        for arch in arches:
            task = progress.add_task(arch, total=plans[arch].total_steps, loss=float("nan"))

            def report(step: int, total: int, loss: float, task: int = task, arch: str = arch) -> None:
                progress.update(task, completed=step, loss=loss)
                if not progress.console.is_terminal and step % max(1, total // 10) == 0:
                    progress.console.print(f"{arch}: step {step}/{total} loss {loss:.4f}")  # logs, CI

            def calibrated(chosen: calibrate.Calibration, arch: str = arch) -> None:
                tried = ", ".join(f"{offset:g}: {figure:.2f}" for offset, figure in chosen.figures.items())
                progress.console.print(f"{arch}: calibrated output offset {chosen.offset:g} (figures: {tried})")

            started = time.perf_counter()
            model, _ = train_arch(
                arch, seed=seed, plan=plans[arch], on_step=report, weights_dir=output_dir, on_calibrated=calibrated
            )
            seconds[arch] = time.perf_counter() - started
            target = (output_dir / f"{arch}.safetensors") if output_dir else weights_path(arch)
            save_weights(model, target)
    return seconds
