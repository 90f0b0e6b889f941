"""local_game.py's --search-offset: a search split that would reach the calibration images is
refused before any data is read."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from harness.data import FASHION_VALIDATION, fashion_dsnet, fashion_resnet


@pytest.mark.parametrize("make", [fashion_resnet, fashion_dsnet])
def test_a_search_split_past_the_validation_images_is_refused(
        make: Callable[..., object]) -> None:
    with pytest.raises(ValueError, match="exceed the 5000-image validation split"):
        make(n_search=1000, n_calib=256, n_test=10,
             search_offset=FASHION_VALIDATION - 1000)
