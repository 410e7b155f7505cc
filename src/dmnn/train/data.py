"""The data of a run: its dataset, as the config says, for training and for evaluation alike."""

from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm

from ..data import DataBundle, load_dataset
from ..errors import CategoryError
from .config import TrainConfig


def say(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    tqdm.write(message, file=sys.stderr)


def load_run_data(cfg: TrainConfig, device: torch.device | None = None) -> DataBundle:
    """``load_dataset`` with the run's options. A default category grouping that does not fit
    the data stops only a method that trains with categories; the others report every class
    as one category (and say so)."""
    categories = cfg.categories
    while True:
        try:
            return load_dataset(
                cfg.dataset, cfg.data_dir, categories=categories, batch_size=cfg.batch_size,
                eval_batch_size=cfg.eval_batch_size, num_workers=cfg.workers, seed=cfg.seed,
                copies=cfg.method.train_copies(cfg), max_train_samples=cfg.max_train_samples,
                max_test_samples=cfg.max_test_samples, holdout=cfg.holdout,
                image_size=cfg.data_image_size(),
                device=device if device is not None and device.type != "cpu" else None,
                pin_memory=device is not None and device.type == "cuda",
            )
        except CategoryError as err:
            if categories is not None or cfg.method.uses_categories(cfg):
                raise
            say(f"categories: {err}; {cfg.model} trains without them, so every class is "
                "reported as one category")
            categories = "none"
