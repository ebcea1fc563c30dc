"""The user-facing figures of `paca demo eval`, on hand-made scenes whose answers are known."""

from __future__ import annotations

import numpy as np

from demo import data, evaluate


def _scene() -> data.Scene:
    """Two digits: a "3" in the top-left box, a "7" in the bottom-right box, strokes inside each."""
    masks = np.zeros((2, 64, 64), dtype=bool)
    masks[0, 4:20, 6:12] = True
    masks[1, 40:60, 40:46] = True
    boxes = np.array([[6, 4, 12, 20], [40, 40, 46, 60]], dtype=np.float32)
    return data.Scene(np.zeros((64, 64, 3), np.uint8), boxes, np.array([3, 7]), masks)


def _detections(boxes, scores, labels) -> evaluate.Detections:
    return evaluate.Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                               np.asarray(labels), np.zeros((len(scores), 64, 64), dtype=bool))


def test_found_and_precision_counts_right_boxes_once():
    scene = _scene()
    found = _detections(
        [[6, 4, 12, 20], [6, 5, 12, 20], [40, 40, 46, 60], [20, 20, 30, 30], [40, 41, 46, 60]],
        [0.9, 0.8, 0.7, 0.6, 0.2],
        [3, 3, 1, 5, 7],  # right, duplicate, wrong label, stray box, right but below the threshold
    )
    figures = evaluate.found_and_precision([scene], [found], score_threshold=0.5)
    assert figures["found_pct"] == 50.0  # the "3" only
    assert figures["precision_pct"] == 25.0  # 1 of the 4 boxes at or above 0.5
    everything = evaluate.found_and_precision([scene], [found], score_threshold=0.0)
    assert everything["found_pct"] == 100.0 and everything["precision_pct"] == 40.0


def test_found_needs_overlap_of_one_half():
    scene = _scene()
    shifted = _detections([[9, 4, 15, 20]], [0.9], [3])  # IoU 3/9 with the "3"
    assert evaluate.found_and_precision([scene], [shifted], 0.5)["found_pct"] == 0.0
    no_boxes = _detections([], [], [])
    assert evaluate.found_and_precision([scene], [no_boxes], 0.5) == {
        "found_pct": 0.0, "precision_pct": 0.0, "digits": 2.0, "boxes": 0.0,
    }


def test_majority_label_counts_background_against_the_digit():
    scene = _scene()
    label_map = np.zeros((64, 64), dtype=np.uint8)
    label_map[4:20, 6:12] = 4  # the "3" (class 3 + 1) everywhere on its strokes
    label_map[40:60, 40:46] = 8  # the "7" as class 8 ...
    label_map[40:52, 40:46] = 0  # ... but background on more than half of its strokes
    assert evaluate.majority_label_accuracy([label_map], [scene]) == 50.0
    label_map[40:52, 40:46] = 8
    assert evaluate.majority_label_accuracy([label_map], [scene]) == 100.0
    label_map[40:52, 40:46] = 2  # a split digit: the larger share decides
    assert evaluate.majority_label_accuracy([label_map], [scene]) == 50.0


def test_segmentation_figures_use_the_served_input_size_and_batch_like_single_images():
    """`predict_segmentation` runs the segmenter on what the service feeds it (the scene resized to fit
    SEG_INPUT_HW, padded to 32), batches only inputs of one size as the service does, and keeps the
    scenes' order: each scene gets the map it gets alone."""
    import torch

    from demo import augment
    from demo.train import load_trained
    from models.demo.archs import SEG_INPUT_HW

    model = load_trained("demo_digits_seg")
    seen = []
    hook = model.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape)))
    square = [data.scene("heldout", index) for index in range(2)]
    wide = augment.resize_scene(data.scene("heldout", 2, hw=(96, 160)), (77, 128))
    scenes = [square[0], wide, square[1]]
    torch.set_num_threads(1)
    together = evaluate.predict_segmentation(model, scenes)
    alone = [evaluate.predict_segmentation(model, [item])[0] for item in scenes]
    hook.remove()
    # 128² → 160², both square scenes in one batch; 77×128 → 96×160 (already a multiple of 32), alone.
    assert sorted(seen[:2]) == [(1, 3, 96, 160), (2, 3, *SEG_INPUT_HW)]
    for batched, single, item in zip(together, alone, scenes, strict=True):
        assert batched.shape == item.image.shape[:2]
        assert (batched == single).mean() > 0.9999
