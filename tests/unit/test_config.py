"""Strict config: presets, overrides, errors that name the key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hmrflow.pipeline.config import PipelineConfig, list_presets, load_config
from hmrflow.pipeline.errors import ConfigError


def test_presets_shipped_and_valid() -> None:
    names = list_presets()
    assert {"clip", "archive", "clinical"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.preset == name
    assert load_config("archive").decode.target_fps == 15
    assert load_config("clinical").decode.allow_truncated is False


def test_overrides_are_typed() -> None:
    cfg = load_config("clip", ["decode.max_side=720", "refine.enabled=false", "seed=3"])
    assert cfg.decode.max_side == 720 and cfg.refine.enabled is False and cfg.seed == 3


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="decode.max_sidee"):
        load_config("clip", ["decode.max_sidee=3"])


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match="decode.batch_size"):
        load_config("clip", ["decode.batch_size=lots"])
    with pytest.raises(ConfigError, match="decode.batch_size"):
        load_config("clip", ["decode.batch_size=0"])


def test_unknown_preset_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("decode: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(listy))


def test_user_yaml_file_and_cross_field_check(tmp_path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("decode:\n  target_fps: 10\nrefine:\n  window: 32\n  overlap: 8\n")
    cfg = load_config(str(f))
    assert cfg.preset == "mine" and cfg.decode.target_fps == 10
    with pytest.raises(ConfigError, match="overlap"):
        load_config(str(f), ["refine.overlap=32"])


def test_frozen_and_hash_tracks_values() -> None:
    a, b = load_config("clip"), load_config("clip", ["seed=1"])
    with pytest.raises(ValidationError):
        a.seed = 5  # type: ignore[misc]
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == load_config("clip").config_hash()
    assert PipelineConfig.model_validate(a.resolved_dict()) == a


def test_tome_r_as_a_per_block_list() -> None:
    from hmrflow.pipeline.config import load_config
    from hmrflow.pipeline.errors import ConfigError

    c = load_config("archive", ["estimate.tome_r=[14, 7, 4]"]).estimate
    assert c.tome_r == [14, 7, 4] and c.tome_schedule == "list" and c.tome_enabled
    assert not load_config("clip", ["estimate.tome_r=[0, 0]"]).estimate.tome_enabled
    with pytest.raises(ConfigError, match="tome_r"):
        load_config("clip", ["estimate.tome_r=[4, -1]"])
    with pytest.raises(ConfigError, match="list"):
        load_config("clip", ["estimate.tome_schedule=list", "estimate.tome_r=4"])
