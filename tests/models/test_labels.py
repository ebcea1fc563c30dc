"""Label sets: sizes, uniqueness and order against independent sources."""

from __future__ import annotations

import pytest

import models
from models.labels import available_label_sets, load_labels


@pytest.mark.parametrize(("name", "count"), [("imagenet1k", 1000), ("coco80", 80), ("ade20k150", 150)])
def test_label_sets_have_the_right_size_and_unique_names(name: str, count: int) -> None:
    names = load_labels(name)
    assert len(names) == count
    assert len(set(names)) == count
    assert all(n == n.strip() and n for n in names)


def test_imagenet_names_match_torchvision_and_known_indices() -> None:
    meta = pytest.importorskip("torchvision.models._meta")
    names = load_labels("imagenet1k")
    assert names == list(meta._IMAGENET_CATEGORIES)
    assert (names[0], names[281], names[967], names[999]) == ("tench", "tabby", "espresso", "toilet tissue")


def test_coco_names_follow_the_category_id_order() -> None:
    """mmdet's 80 labels are the COCO categories sorted by id: torchvision's 91-entry list without the
    background and the 10 unused ids ("N/A") gives the same order independently."""
    meta = pytest.importorskip("torchvision.models._meta")
    expected = [name for name in meta._COCO_CATEGORIES if name not in ("__background__", "N/A")]
    assert load_labels("coco80") == expected
    assert load_labels("coco80")[11] == "stop sign"  # COCO id 13: id 12 is unused


def test_ade20k_order_landmarks() -> None:
    """Written from the mmseg ADE20KDataset class tuple; spot-check positions that shape the palette."""
    names = load_labels("ade20k150")
    assert names[:8] == ["wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed"]
    assert (names[12], names[20], names[136], names[149]) == ("person", "car", "traffic light", "flag")


def test_every_registered_arch_names_an_existing_label_set() -> None:
    sets = set(available_label_sets())
    for arch in models.list_archs():
        assert models.get_arch(arch).labels in sets, arch


def test_unknown_label_set_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match=r"unknown label set 'nope'.*imagenet1k"):
        load_labels("nope")
    with pytest.raises(KeyError):
        load_labels("../labels/imagenet1k")
