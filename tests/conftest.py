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
