"""Category maps: CIFAR-10 default grouping, k-means, CIFAR-100 coarse labels, user JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dmnn.data import (
    CIFAR10_CLASSES,
    CategoryMap,
    DataError,
    categories_from_mapping,
    cifar10_default_categories,
    class_mean_features,
    coarse_label_categories,
    kmeans_categories,
    load_category_json,
    save_category_json,
)

NAMES = ["cat", "dog", "eel", "fox"]


def test_cifar10_default_grouping_as_documented() -> None:
    cmap = cifar10_default_categories(list(CIFAR10_CLASSES))
    assert cmap.num_categories == 4
    groups = {cmap.names[k]: {CIFAR10_CLASSES[c] for c in m} for k, m in enumerate(cmap.members())}
    assert groups == {
        "vehicles": {"airplane", "automobile", "ship", "truck"},
        "domestic_mammals": {"cat", "dog"},
        "hoofed_mammals": {"deer", "horse"},
        "other_animals": {"bird", "frog"},
    }
    assert cmap.class_to_category == [0, 0, 3, 1, 2, 1, 3, 2, 0, 0]


def test_cifar10_default_grouping_follows_class_order() -> None:
    shuffled = list(reversed(CIFAR10_CLASSES))  # truck first
    cmap = cifar10_default_categories(shuffled)
    assert cmap.names[cmap.class_to_category[0]] == "vehicles"
    assert cmap.names[cmap.class_to_category[shuffled.index("frog")]] == "other_animals"


def test_cifar10_default_grouping_rejects_other_classes() -> None:
    with pytest.raises(DataError, match="10 CIFAR-10 classes"):
        cifar10_default_categories(NAMES)


def test_kmeans_recovers_clear_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0]])
    truth = [2, 0, 1, 1, 2, 0, 0, 1, 2]
    feats = centres[truth] + rng.normal(scale=0.1, size=(9, 2))
    cmap = kmeans_categories(feats, 3, seed=0)
    assert cmap.num_categories == 3 and cmap.num_classes == 9
    assert set(cmap.class_to_category) == {0, 1, 2}
    # Same partition as the truth, numbered by first appearance (class 0 -> category 0).
    assert cmap.class_to_category == [0, 1, 2, 2, 0, 1, 1, 2, 0]
    assert kmeans_categories(feats, 3, seed=0).class_to_category == cmap.class_to_category


@pytest.mark.parametrize("k", [0, 10, -1, True, 2.5])
def test_kmeans_rejects_bad_k(k: object) -> None:
    with pytest.raises(DataError, match=r"1 <= K <= 9"):
        kmeans_categories(np.random.default_rng(0).normal(size=(9, 4)), k)  # type: ignore[arg-type]


def test_kmeans_k1_and_k_equals_num_classes() -> None:
    feats = np.random.default_rng(0).normal(size=(5, 3))
    assert kmeans_categories(feats, 1).class_to_category == [0] * 5
    assert kmeans_categories(feats, 5).class_to_category == [0, 1, 2, 3, 4]


def test_kmeans_indistinct_features() -> None:
    with pytest.raises(DataError, match="distinct"):
        kmeans_categories(np.ones((4, 3)), 2)


def test_class_mean_features() -> None:
    images = torch.tensor([0, 255, 51, 153], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    labels = torch.tensor([0, 0, 1, 1])
    feats = class_mean_features(images.contiguous(), labels, 2, chunk=3)
    assert feats.shape == (2, 4)
    assert np.allclose(feats[0], 0.5) and np.allclose(feats[1], 0.4)
    with pytest.raises(DataError, match="no training samples"):
        class_mean_features(images.contiguous(), labels, 3)


def test_category_map_call_and_dict_roundtrip() -> None:
    cmap = CategoryMap([1, 0, 1, 0], ["a", "b"])
    labels = torch.tensor([[0, 1], [3, 2]])
    assert cmap(labels).tolist() == [[1, 0], [0, 1]]
    assert cmap(labels).dtype == torch.int64
    again = CategoryMap.from_dict(json.loads(json.dumps(cmap.to_dict())), num_classes=4)
    assert again == cmap
    with pytest.raises(DataError, match="covers 4 classes"):
        CategoryMap.from_dict(cmap.to_dict(), num_classes=5)


def test_category_map_validation() -> None:
    with pytest.raises(DataError, match="have no classes"):
        CategoryMap([0, 0], ["a", "unused"])
    with pytest.raises(DataError, match="outside 0..1"):
        CategoryMap([0, 2], ["a", "b"])
    with pytest.raises(DataError, match="unique"):
        CategoryMap([0, 1], ["a", "a"])


def test_coarse_label_categories() -> None:
    fine = torch.tensor([0, 1, 2, 3, 0, 2])
    coarse = torch.tensor([1, 0, 1, 0, 1, 1])
    cmap = coarse_label_categories(fine, coarse, ["x", "y"], 4)
    assert cmap.class_to_category == [1, 0, 1, 0] and cmap.names == ["x", "y"]
    with pytest.raises(DataError, match="more than one coarse label"):
        coarse_label_categories(fine, torch.tensor([1, 0, 1, 0, 0, 1]), ["x", "y"], 4)
    with pytest.raises(DataError, match="never appear"):
        coarse_label_categories(fine, coarse, ["x", "y"], 5)


def test_user_mapping_names_and_index_strings() -> None:
    cmap = categories_from_mapping({"cat": "pet", "1": "pet", "eel": "wild", "3": "wild"}, NAMES)
    assert cmap.names == ["pet", "wild"]
    assert cmap.class_to_category == [0, 0, 1, 1]


def _write(tmp_path: Path, content: object | str) -> Path:
    path = tmp_path / "cats.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_load_category_json_flat_and_full(tmp_path: Path) -> None:
    path = _write(tmp_path, {"cat": "pet", "dog": "pet", "eel": "fish", "fox": "wild"})
    cmap = load_category_json(path, NAMES)
    assert cmap.class_to_category == [0, 0, 1, 2] and cmap.names == ["pet", "fish", "wild"]
    save_category_json(cmap, tmp_path / "full.json")
    assert load_category_json(tmp_path / "full.json", NAMES) == cmap


def test_json_unknown_class(tmp_path: Path) -> None:
    path = _write(tmp_path, {"cat": "pet", "dog": "pet", "eel": "fish", "fox": "w", "owl": "w"})
    with pytest.raises(DataError, match=r"cats\.json maps unknown class 'owl'"):
        load_category_json(path, NAMES)


def test_json_unmapped_class(tmp_path: Path) -> None:
    path = _write(tmp_path, {"cat": "pet", "dog": "pet"})
    with pytest.raises(DataError, match=r"leaves 2 classes unmapped \('eel', 'fox'\)"):
        load_category_json(path, NAMES)


def test_json_syntax_error(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"cat": "pet",,}')
    with pytest.raises(DataError, match=r"cats\.json is not valid JSON .*line 1"):
        load_category_json(path, NAMES)


def test_json_wrong_shape_and_values(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="must hold a non-empty JSON object"):
        load_category_json(_write(tmp_path, ["cat", "dog"]), NAMES)
    with pytest.raises(DataError, match="category names must be non-empty strings"):
        load_category_json(
            _write(tmp_path, {"cat": None, "dog": "a", "eel": "a", "fox": "a"}), NAMES
        )
    with pytest.raises(DataError, match="maps class 'cat' twice"):
        load_category_json(
            _write(tmp_path, {"cat": "a", "0": "b", "dog": "a", "eel": "a", "fox": "a"}), NAMES
        )
    with pytest.raises(DataError, match="does not exist"):
        load_category_json(tmp_path / "missing.json", NAMES)


def test_imagenet_wordnet_categories():
    """The committed ILSVRC-2012 map (scripts/imagenet_categories.py, WordNet 3.0): 1000 ids in
    58 categories, the default for an image folder whose classes are exactly those ids."""
    import json
    from importlib import resources

    from dmnn.data.categories import imagenet_categories

    data = json.loads(resources.files("dmnn.data").joinpath("imagenet_categories.json")
                      .read_text())
    ids = data["class_names"]
    assert len(set(ids)) == 1000 and len(data["names"]) == 58
    assert sorted(set(data["class_to_category"])) == list(range(58))
    cmap = imagenet_categories(sorted(ids))
    assert cmap is not None and cmap.num_categories == 58
    name = dict(zip(sorted(ids), (cmap.names[c] for c in cmap.class_to_category), strict=True))
    assert name["n02085620"] == name["n02106662"] == "dog (n02084071)"  # Chihuahua, shepherd
    assert name["n01440764"] == "aquatic_vertebrate (n01473806)"  # tench
    assert name["n04285008"] != name["n02085620"]  # sports car is no dog
    assert imagenet_categories(sorted(ids)[:999]) is None  # another dataset: k-means default


def test_an_ilsvrc_folder_defaults_to_the_wordnet_categories(tmp_path):
    import json
    from importlib import resources

    from PIL import Image

    from dmnn.data import load_dataset

    ids = json.loads(resources.files("dmnn.data").joinpath("imagenet_categories.json")
                     .read_text())["class_names"]
    for split in ("train", "val"):
        for wnid in ids:
            d = tmp_path / split / wnid
            d.mkdir(parents=True)
            Image.new("RGB", (8, 8), (len(wnid), 0, 0)).save(d / "a.png")
    bundle = load_dataset("imagefolder", tmp_path, image_size=8, batch_size=4)
    assert bundle.category_map.num_categories == 58
    assert bundle.category_map.names[0] == "device (n03183080)"
