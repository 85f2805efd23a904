"""Device resolution (one home: hmrflow.pipeline.devices) and the device/seed keys of the config."""

from __future__ import annotations

import pytest
import torch

from hmrflow.pipeline.config import load_config
from hmrflow.pipeline.devices import autocast_dtype, check_device_string, resolve_device
from hmrflow.pipeline.errors import ConfigError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.mark.parametrize("bad", ["npu", "cuda:x", "tpu", "", "cuda:-1", "cpu:0x"])
def test_malformed_strings_are_config_errors_naming_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="estimate.device"):
        resolve_device(bad, "estimate.device")
    with pytest.raises(ConfigError, match="estimate.device"):
        check_device_string(bad, "estimate.device")


def test_forms_are_normalised() -> None:
    assert check_device_string(" CUDA:1 ") == "cuda:1"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")


@no_cuda
def test_auto_is_cpu_and_cuda_is_a_one_line_error_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="refine.device: 'cuda' asked for, but CUDA is not available"):
        resolve_device("cuda", "refine.device")


def test_autocast_rules() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16", cpu_bf16=False) is None  # training keeps fp32 on the CPU
    assert autocast_dtype(cpu, "fp16") is None  # no fast CPU fp16
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda, "fp16") is torch.float16 and autocast_dtype(cuda, "bf16") is torch.bfloat16


def test_top_level_device_reaches_every_model_stage_unless_a_section_sets_its_own() -> None:
    cfg = load_config("clip", ["device=cpu"])
    assert (cfg.detect.device, cfg.estimate.device, cfg.refine.device) == ("cpu", "cpu", "cpu")
    cfg = load_config("clip", ["device=cpu", "estimate.device=cuda:1"])
    assert (cfg.detect.device, cfg.estimate.device, cfg.refine.device) == ("cpu", "cuda:1", "cpu")
    # a config never changes another's: default section instances are shared, so they are copied
    assert load_config("clip").refine.device == "auto" and load_config("clip").detect.device == "auto"
    with pytest.raises(ConfigError, match="refine.device: 'xx' is not a device"):
        load_config("clip", ["refine.device=xx"])


def test_cli_device_flag_reaches_refine_and_the_seed_reaches_the_refine_stage() -> None:
    from hmrflow.jobs.cli import build_parser
    from hmrflow.jobs.cli.run import config_from_args
    from hmrflow.jobs.pipelines import build_spec

    args = build_parser().parse_args(["run", "x.mp4", "--device", "cpu", "--set", "seed=7"])
    cfg = config_from_args(args)
    assert (cfg.detect.device, cfg.estimate.device, cfg.refine.device) == ("cpu", "cpu", "cpu")
    spec = build_spec(cfg, "/tmp/unused")
    assert spec.refine.seed == 7 and spec.refine.cfg.device == "cpu"


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_only_with_native_instructions(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """Emulated bf16 is several times slower than fp32 on a CPU without bf16 instructions, so
    ``precision=bf16`` runs fp32 there; with them (or forced) it runs bf16."""
    from hmrflow.pipeline import devices

    cpu = torch.device("cpu")
    monkeypatch.delenv(devices.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(
        devices, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"} | ({"avx512_bf16"} if native else set()))
    )
    devices.cpu_has_native_bf16.cache_clear()
    try:
        assert devices.cpu_has_native_bf16() is native
        assert (autocast_dtype(cpu, "bf16") is torch.bfloat16) is native
        monkeypatch.setenv(devices.CPU_BF16_ENV, "1")
        devices.cpu_has_native_bf16.cache_clear()
        assert autocast_dtype(cpu, "bf16") is torch.bfloat16
        monkeypatch.setenv(devices.CPU_BF16_ENV, "0")
        devices.cpu_has_native_bf16.cache_clear()
        assert autocast_dtype(cpu, "bf16") is None
    finally:
        devices.cpu_has_native_bf16.cache_clear()


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    """On Linux the flags come from /proc/cpuinfo (every x86 CPU there has ``fpu``)."""
    import platform

    from hmrflow.pipeline.devices import _cpu_flags

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 Linux only")
    assert "fpu" in _cpu_flags()
