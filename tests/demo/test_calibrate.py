"""Post-training calibration of the scene models: the chosen offset is the best one tried, it is what
the model is left with, and the scenes it is chosen on never hold a held-out digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demo import calibrate, data, evaluate, train
from models.demo.archs import SEG_NUM_CLASSES, weights_path

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.usefixtures("one_torch_thread")]


def _trained(arch: str):
    if not weights_path(arch).exists():
        pytest.skip(f"{arch} has no committed weights")
    return train.load_trained(arch)


def test_choose_takes_the_best_figure_and_the_smallest_offset_on_ties():
    figures = {0.0: 1.0, 0.5: 3.0, 1.0: 3.0, 1.5: 2.0}
    chosen = calibrate._choose(list(figures), figures.__getitem__)
    assert chosen.offset == 0.5
    assert chosen.figures == figures


def test_calibration_scenes_are_built_from_training_digits_only():
    """Every digit in a calibration scene is drawn from the training split's pool: rebuilding the scenes
    from a pool with the held-out digits blanked out changes nothing."""
    images, labels = data.load_mnist()
    train_only = images.copy()
    train_only[data.split_indices("heldout")] = 0
    rebuilt = [
        data.render_scene(train_only[data.split_indices("train")], labels[data.split_indices("train")],
                          data._rng(calibrate.CALIBRATION_SEED, "train", index, 1), (128, 128))
        for index in range(3)
    ]
    for ours, again in zip(calibrate.calibration_scenes(3), rebuilt, strict=True):
        np.testing.assert_array_equal(ours.image, again.image)
    heldout_first = evaluate.heldout_scenes(1)[0]
    assert not np.array_equal(calibrate.calibration_scenes(1)[0].image, heldout_first.image)


def test_detector_mask_calibration_leaves_the_model_at_the_best_offset():
    model = _trained("demo_digits_det")
    scenes = calibrate.calibration_scenes(6)
    bias = model.roi_heads.mask_predictor.mask_fcn_logits.bias
    before = bias.detach().clone()
    chosen = calibrate.calibrate_detector_masks(model, scenes, offsets=(-1.0, 0.0, 1.0))
    assert set(chosen.figures) == {-1.0, 0.0, 1.0}
    assert chosen.figures[chosen.offset] == max(chosen.figures.values())
    torch.testing.assert_close(bias.detach(), before + chosen.offset, rtol=0, atol=0)
    again = evaluate.coco_map(scenes, evaluate.predict_detections(model, scenes))["segm_mAP"]
    assert again == pytest.approx(chosen.figures[chosen.offset])
    assert len(set(chosen.figures.values())) > 1, "the offset should change the masks"


def test_segmenter_background_calibration_leaves_the_model_at_the_best_offset():
    model = _trained("demo_digits_seg")
    scenes = calibrate.calibration_scenes(6)
    bias = model.decode_head.conv_seg.bias
    before = bias.detach().clone()
    chosen = calibrate.calibrate_segmenter_background(model, scenes, offsets=(0.0, 1.0, 4.0))
    assert chosen.figures[chosen.offset] == max(chosen.figures.values())
    expected = before.clone()
    expected[0] -= chosen.offset
    torch.testing.assert_close(bias.detach(), expected, rtol=0, atol=0)
    maps = evaluate.predict_segmentation(model, scenes)
    figure = evaluate.majority_label_accuracy(maps, scenes) + 1e-4 * evaluate.mean_iou(
        maps, [s.semantic_map() for s in scenes], SEG_NUM_CLASSES
    )
    assert figure == pytest.approx(chosen.figures[chosen.offset])


def test_classifier_gets_no_calibration():
    assert calibrate.calibrate_arch("demo_digits_cls", model=None) is None
