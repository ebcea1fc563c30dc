"""Demo training smoke tests: the real losses on real demo data go down in a few optimiser steps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from demo import data, train
from demo.train import TrainPlan

FEW_STEPS = TrainPlan(steps=12, batch_size=0, learning_rate=2e-3, weight_decay=0.0, warmup_steps=1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_classifier_loss_decreases_on_a_fixed_batch():
    model = train.build_untrained("demo_digits_cls", seed=0)
    digits, labels = data.load_mnist()
    chosen = data.split_indices("heldout")[::31]
    images = np.stack([data.render_digit(digits[i], np.random.default_rng(int(i))) for i in chosen])
    batch = (train.to_input(images, "demo_digits_cls"), torch.from_numpy(labels[chosen]))
    losses = train._optimise(model, FEW_STEPS, itertools.repeat(batch), train.classification_loss, None)
    assert losses[-1] < 0.8 * losses[0]
    assert not model.training


def test_segmenter_loss_decreases_on_fixed_scenes():
    pytest.importorskip("models.segmentation.segmentor")
    model = train.build_untrained("demo_digits_seg", seed=0)
    batch = data.scenes("train", 2)
    losses = train._optimise(model, FEW_STEPS, itertools.repeat(batch), train.segmentation_loss, None)
    assert losses[-1] < 0.8 * losses[0]


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

    plan = TrainPlan(steps=6, batch_size=0, learning_rate=2e-3, weight_decay=0.0, warmup_steps=1)
    losses = train._optimise(detector, plan, itertools.repeat(data.scenes("train", 1)), train.detection_loss, None)
    assert losses[-1] < losses[0]
    for name, value in body.state_dict().items():
        torch.testing.assert_close(value, frozen[name], rtol=0, atol=0)
