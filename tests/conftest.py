import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """Import a file under scripts/ by its path (``"bench/conv_floor.py"``): the scripts are
    run as files, not a package, so a test loads one the same way."""

    def load(relpath: str) -> ModuleType:
        path = SCRIPTS / relpath
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write a tiny ImageFolder under ``tmp_path / name`` (train/ and val/, a folder of solid
    PNGs per class; ``colour(class_index, i)`` picks each fill) and return its root."""
    from PIL import Image

    def write(name: str = "imgs", classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 2,
              size: tuple[int, int] = (20, 20),
              colour: Callable[[int, int], tuple[int, int, int]] | None = None) -> Path:
        root = tmp_path / name
        for split in ("train", "val"):
            for c, cls in enumerate(classes):
                (root / split / cls).mkdir(parents=True)
                for i in range(per_class):
                    fill = colour(c, i) if colour is not None else (40 * i, 0, 0)
                    Image.new("RGB", size, fill).save(root / split / cls / f"{i}.png")
        return root

    return write
