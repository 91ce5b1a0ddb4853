"""TitansConfig: the seed's names work for every variant; bad values name their field."""

import pytest

from titans_core import TitansConfig


@pytest.mark.parametrize("variant", ["MAC", "MAG", "MAL", "LMM"])
def test_the_seed_style_constructor_works_for_every_variant(variant):
    config = TitansConfig(
        variant=variant,
        vocab_size=512,
        d_model=128,
        n_layers=2,
        n_heads=4,
        mem_layers=2,
        n_persistent=8,
        chunk_size=32,
        segment_size=128,
        window=64,
    )
    assert config.head_dim == 32
    assert TitansConfig.from_json(config.to_json()) == config


def test_defaults_are_a_valid_small_mac():
    config = TitansConfig()
    assert config.variant == "MAC" and config.segment_size % config.chunk_size == 0


def test_the_fingerprint_follows_every_field():
    assert TitansConfig().fingerprint() == TitansConfig().fingerprint()
    assert TitansConfig().fingerprint() != TitansConfig(use_decay=False).fingerprint()


@pytest.mark.parametrize(
    "fields, named",
    [
        (dict(variant="MAX"), "variant"),
        (dict(d_model=100, n_heads=3), "n_heads"),
        (dict(d_model=96, n_heads=32), "even"),
        (dict(mem_heads=3), "mem_heads"),
        (dict(chunk_size=48, segment_size=256), "segment_size"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(n_layers=2.5), "n_layers"),
        (dict(window=True), "window"),
        (dict(n_persistent=-1), "n_persistent"),
        (dict(use_momentum="yes"), "use_momentum"),
        (dict(max_lr=0), "max_lr"),
    ],
)
def test_invalid_values_raise_naming_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        TitansConfig(**fields)


def test_segment_size_only_binds_mac():
    mag = TitansConfig(variant="MAG", chunk_size=48, segment_size=256)
    assert (mag.chunk_size, mag.segment_size) == (48, 256)
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        TitansConfig(variant="MAC", chunk_size=48, segment_size=256)


@pytest.mark.parametrize(
    "text, error", [("{bad", "not valid JSON"), ("[1]", "JSON object"), ('{"d_modle": 64}', "d_modle")]
)
def test_bad_json_is_refused(text, error):
    with pytest.raises(ValueError, match=error):
        TitansConfig.from_json(text)


@pytest.mark.parametrize("field", ["max_lr", "rope_base", "norm_eps"])
def test_infinite_numbers_are_refused(field):
    with pytest.raises(ValueError, match=field):
        TitansConfig(**{field: float("inf")})
