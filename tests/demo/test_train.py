"""Demo training smoke tests: the real losses on real demo data go down in a few optimiser steps."""

from __future__ import annotations

import copy
import dataclasses
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from demo import data, train
from demo.train import TrainPlan
from models.demo.archs import BACKBONE_PRETRAINING

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEW_STEPS = TrainPlan(steps=20, batch_size=0, learning_rate=2e-3, weight_decay=0.0, warmup_steps=1)


def test_classifier_loss_decreases_on_a_fixed_batch():
    model = train.build_untrained("demo_digits_cls", seed=0)
    digits, labels = data.load_mnist()
    chosen = data.split_indices("heldout")[::31]
    images = np.stack([data.render_digit(digits[i], np.random.default_rng(int(i))) for i in chosen])
    batch = (train.to_input(images, "demo_digits_cls"), torch.from_numpy(labels[chosen]))
    losses = train._optimise(model, FEW_STEPS, itertools.repeat(batch), train.classification_loss, None)
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses
    assert not model.training


@pytest.mark.parametrize("seed", [0, 1])
def test_segmenter_loss_decreases_on_fixed_scenes(seed):
    """From scratch, with the head's dropout and BatchNorm in training mode: single steps are noisy, so
    the mean of the last three losses is compared with that of the first three (≈ 0.5× in practice)."""
    pytest.importorskip("models.segmentation.segmentor")
    model = train.build_untrained("demo_digits_seg", seed=seed)
    batch = data.scenes("train", 2)
    plan = TrainPlan(steps=20, batch_size=0, learning_rate=4e-3, weight_decay=0.0, warmup_steps=1)
    losses = train._optimise(model, plan, itertools.repeat(batch), train.segmentation_loss, None)
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses


def test_training_is_reproducible_by_seed():
    pytest.importorskip("models.segmentation.segmentor")
    plan = TrainPlan(steps=2, batch_size=2, learning_rate=1e-3, warmup_steps=1, train_scenes=4)
    first, losses_a = train.train_arch("demo_digits_seg", seed=3, plan=plan)
    second, losses_b = train.train_arch("demo_digits_seg", seed=3, plan=plan)
    assert losses_a == losses_b
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_detector_trains_on_the_frozen_classifier_backbone(tmp_path):
    pytest.importorskip("models.detection.mask_rcnn")
    classifier = train.build_untrained("demo_digits_cls", seed=1)
    train.save_weights(classifier, tmp_path / "demo_digits_cls.safetensors")
    detector = train.build_untrained("demo_digits_det", seed=0)
    train.adopt_backbone(detector, tmp_path / "demo_digits_cls.safetensors", freeze=True)
    body = train.paca_body(detector)
    for name, value in body.state_dict().items():
        saved = classifier.state_dict()[name].half().float()  # weights are stored as float16
        torch.testing.assert_close(value, saved, rtol=0, atol=0)
    assert not any(p.requires_grad for p in body.parameters())
    frozen = {k: v.clone() for k, v in body.state_dict().items()}

    # RPN and RoI sampling are random every step, so compare the means of the first and last three losses.
    plan = TrainPlan(steps=12, batch_size=0, learning_rate=1e-3, weight_decay=0.0, warmup_steps=1)
    losses = train._optimise(detector, plan, itertools.repeat(data.scenes("train", 1)), train.detection_loss, None)
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses
    for name, value in body.state_dict().items():
        torch.testing.assert_close(value, frozen[name], rtol=0, atol=0)


def test_quick_schedule_refuses_to_replace_the_committed_weights():
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, ["train-demo", "--quick"])
    assert result.exit_code == 2
    assert "--output-dir" in result.output


def test_ema_weights_are_the_running_average():
    """With ema_decay the model ends with the exponential moving average of the steps' weights."""
    model = train.build_untrained("demo_digits_cls", seed=0)
    digits, labels = data.load_mnist()
    chosen = data.split_indices("train")[:8]
    images = np.stack([data.render_digit(digits[i], np.random.default_rng(int(i))) for i in chosen])
    batch = (train.to_input(images, "demo_digits_cls"), torch.from_numpy(labels[chosen]))
    plan = TrainPlan(steps=3, batch_size=0, learning_rate=1e-3, weight_decay=0.0, warmup_steps=1, ema_decay=0.5)
    snapshots = []
    reference = train.build_untrained("demo_digits_cls", seed=0)
    train._optimise(reference, dataclasses.replace(plan, ema_decay=0.0), itertools.repeat(batch),
                    train.classification_loss, lambda *_: snapshots.append(copy.deepcopy(reference.state_dict())))
    train._optimise(model, plan, itertools.repeat(batch), train.classification_loss, None)
    name = "head.weight"
    # AveragedModel: the first update copies, later ones blend: avg ← 0.5·avg + 0.5·new.
    expected = 0.5 * (0.5 * snapshots[0][name] + 0.5 * snapshots[1][name]) + 0.5 * snapshots[2][name]
    torch.testing.assert_close(model.state_dict()[name], expected)


def test_backbone_learns_at_its_own_rate():
    model = train.build_untrained("demo_digits_seg", seed=0)
    plan = TrainPlan(steps=1, batch_size=1, learning_rate=1e-3, backbone_lr_scale=0.25)
    groups = train._param_groups(model, plan)
    body = {id(p) for p in train.paca_body(model).parameters()}
    assert len(groups) == 2 and groups[1]["lr"] == 2.5e-4
    assert {id(p) for p in groups[1]["params"]} == body
    assert not body & {id(p) for p in groups[0]["params"]}
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_segmentation_loss_without_size_weights_is_class_weighted_cross_entropy():
    """power 0 is exactly mmseg's class-weighted mean cross-entropy (torch's own `weight=` reduction)."""
    model = train.build_untrained("demo_digits_seg", seed=0).eval()
    batch = data.scenes("train", 2)
    torch.manual_seed(0)
    ours = train.segmentation_loss(model, batch)
    pixels, target = train.padded_inputs(batch, "demo_digits_seg")
    logits = F.interpolate(model(pixels), size=target.shape[-2:], mode="bilinear", align_corners=False)
    reference = F.cross_entropy(
        logits, target, weight=train.SEG_CLASS_WEIGHTS, ignore_index=train.IGNORE_INDEX
    )
    torch.testing.assert_close(ours, reference)


def test_small_digits_weigh_more_with_size_weights():
    batch = data.scenes("train", 3)
    _, target = train.padded_inputs(batch, "demo_digits_seg")
    weights = train.pixel_weights(batch, target, small_digit_power=0.5)
    low, high = train.SMALL_DIGIT_WEIGHT_RANGE
    for row, item in enumerate(batch):
        for mask in item.masks:
            values = weights[row][torch.from_numpy(mask)]
            assert torch.all(values == values[0])  # one weight per digit
            expected = np.clip((train.SMALL_DIGIT_AREA / mask.sum()) ** 0.5, low, high)
            assert values[0].item() == pytest.approx(expected)
        height, width = item.image.shape[:2]
        background = torch.from_numpy(item.semantic_map() == 0)
        assert torch.all(weights[row][:height, :width][background] == train.SEG_CLASS_WEIGHTS[0])
    assert torch.all(weights[target == train.IGNORE_INDEX] == 0)
    by_area = sorted(
        (mask.sum(), weights[row][torch.from_numpy(mask)][0].item())
        for row, item in enumerate(batch)
        for mask in item.masks
    )
    assert by_area[0][1] > by_area[-1][1]  # the smallest digit outweighs the largest


def test_follow_on_stage_trains_on_from_the_first_and_reports_every_step():
    """A plan with `then` runs both stages in one model (the second starting where the first ended) and
    reports steps 1..total_steps to the progress hook."""
    pytest.importorskip("models.segmentation.segmentor")
    second = TrainPlan(steps=2, batch_size=2, learning_rate=1e-3, warmup_steps=1, small_digit_power=0.5)
    plan = TrainPlan(steps=2, batch_size=2, learning_rate=1e-3, warmup_steps=1, train_scenes=4, then=second)
    seen: list[tuple[int, int]] = []
    staged, losses = train.train_arch(
        "demo_digits_seg", seed=3, plan=plan, on_step=lambda step, total, _loss: seen.append((step, total))
    )
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)] and len(losses) == 4
    first_only, first_losses = train.train_arch("demo_digits_seg", seed=3, plan=dataclasses.replace(plan, then=None))
    assert first_losses == losses[:2]
    pairs = zip(staged.state_dict().values(), first_only.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs), "the second stage should have moved the weights"


def test_scene_models_build_on_the_pretrained_body_trained_before_them():
    """The scene models adopt BACKBONE_PRETRAINING, not the served classifier (which can then be retrained
    alone), and `paca train-demo` trains that body first."""
    for arch in ("demo_digits_seg", "demo_digits_det"):
        assert train.PLANS[arch].backbone_from == BACKBONE_PRETRAINING
        assert train.TRAINING_ORDER.index(BACKBONE_PRETRAINING) < train.TRAINING_ORDER.index(arch)
    assert train.PLANS["demo_digits_cls"].backbone_from is None


def test_ensure_trains_the_pretrained_body_only_when_its_weights_are_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "weights_path", lambda arch: tmp_path / f"{arch}.safetensors")
    assert train.training_chain("demo_digits_seg") == [BACKBONE_PRETRAINING, "demo_digits_seg"]
    assert train.training_chain("demo_digits_cls") == ["demo_digits_cls"]
    (tmp_path / f"{BACKBONE_PRETRAINING}.safetensors").touch()
    assert train.training_chain("demo_digits_det") == ["demo_digits_det"]


def test_pretrained_body_trains_on_digits_and_fits_the_scene_models(tmp_path):
    """A quick run of the pre-training target gives a digit classifier whose body (head dropped) loads
    strictly into the segmenter, as `train_arch` does from the saved file."""
    pytest.importorskip("models.segmentation.segmentor")
    plan = TrainPlan(steps=2, batch_size=8, learning_rate=1e-3, warmup_steps=1, distort=True)
    model, losses = train.train_arch(BACKBONE_PRETRAINING, seed=0, plan=plan)
    assert len(losses) == 2 and model.head.out_features == 10
    train.save_weights(model, tmp_path / f"{BACKBONE_PRETRAINING}.safetensors")
    segmenter = train.build_untrained("demo_digits_seg", seed=0)
    train.adopt_backbone(segmenter, tmp_path / f"{BACKBONE_PRETRAINING}.safetensors", freeze=False)
    for name, value in train.paca_body(segmenter).state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name].half().float(), rtol=0, atol=0)


def test_to_input_resizes_like_the_service():
    """The classifier's training and evaluation inputs are exactly what the service feeds it."""
    from PIL import Image

    from models.preprocess import preprocess_image
    from models.registry import get_arch

    images = data.digit_images("heldout")[0][:3]
    spec = get_arch("demo_digits_cls").preprocess
    served = torch.from_numpy(np.stack([preprocess_image(Image.fromarray(image), spec)[0] for image in images]))
    torch.testing.assert_close(train.to_input(images, "demo_digits_cls"), served, rtol=0, atol=1e-5)
