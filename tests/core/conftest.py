import pytest

from titans_core import TitansConfig, TitansLM

VARIANTS = ["MAC", "MAG", "MAL", "LMM"]


def _small_config(variant: str, **overrides) -> TitansConfig:
    """Small enough to run in milliseconds, with chunks, segments and windows a test crosses often."""
    settings = dict(
        variant=variant,
        vocab_size=300,
        d_model=32,
        n_layers=2,
        n_heads=2,
        mem_heads=2,
        mem_layers=2,
        n_persistent=3,
        chunk_size=4,
        segment_size=8,
        window=6,
        max_lr=0.2,
    )
    return TitansConfig(**(settings | overrides))


@pytest.fixture
def small_config():
    """``small_config(variant, **overrides)``: a TitansConfig for tests."""
    return _small_config


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture
def model(variant) -> TitansLM:
    return TitansLM(_small_config(variant)).eval()
