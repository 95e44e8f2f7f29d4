"""The SMOCAM_* environment switches: one vocabulary, read at call time, unknown words refused."""
import pytest
import torch

from captum_smocam import _settings, fastpath, kernel_choice
from captum_smocam.models import VGG3D
from captum_smocam.smocam import SMOCAM


@pytest.mark.parametrize("word,expected", [("1", True), (" ON ", True), ("true", True), ("Yes", True),
                                           ("0", False), ("off", False), ("FALSE", False), ("no", False),
                                           ("", True)])
def test_on_off_words(monkeypatch, word, expected):
    monkeypatch.setenv(_settings.REUSE_SPLITS, word)
    assert _settings.reuse_splits() is expected


@pytest.mark.parametrize("word,mode", [("1", "first"), ("on", "first"), ("first", "first"), ("", "first"),
                                       ("fastest", "fastest"), ("no", "off"), ("0", "off")])
def test_kernel_tuning_words(monkeypatch, word, mode):
    monkeypatch.setattr(_settings, "_OVERRIDES", {})
    monkeypatch.setenv(kernel_choice.TUNING_ENV, word)
    assert kernel_choice.kernel_tuning_mode() == mode


@pytest.mark.parametrize("name,value", [(_settings.KERNEL_TUNING, "disable"), (_settings.KERNEL_TUNING, "fastset"),
                                        (_settings.REUSE_SPLITS, "banana"), (_settings.PLAN_CACHE, "yes")])
def test_an_unknown_word_is_a_one_line_error_naming_variable_and_value(monkeypatch, name, value):
    """Before: SMOCAM_KERNEL_TUNING=disable and SMOCAM_REUSE_SPLITS=banana silently meant "on"."""
    monkeypatch.setattr(_settings, "_OVERRIDES", {})
    monkeypatch.setenv(name, value)
    torch.manual_seed(0)
    model = VGG3D(2, channels=(4, 8)).eval()
    with pytest.raises(ValueError) as info:
        SMOCAM(model, model.features.block2).attribute(torch.randn(1, 1, 10, 12, 14), target=0, n_steps=2)
    message = str(info.value)
    assert name in message and repr(value) in message and len(message.splitlines()) == 1


def test_switches_are_read_at_call_time(monkeypatch):
    monkeypatch.setattr(_settings, "_OVERRIDES", {})
    monkeypatch.setenv(_settings.REUSE_SPLITS, "off")
    assert fastpath.reuse_splits() is False
    monkeypatch.setenv(_settings.REUSE_SPLITS, "on")
    assert fastpath.reuse_splits() is True
    fastpath.set_reuse_splits(False)  # the process-wide override wins
    assert fastpath.reuse_splits() is False


def test_plan_cache_words(monkeypatch):
    for off in ("", "off", "0", "none", "No"):
        monkeypatch.setenv(_settings.PLAN_CACHE, off)
        assert _settings.plan_cache_path() is None
    monkeypatch.setenv(_settings.PLAN_CACHE, "/tmp/plans.json")
    assert _settings.plan_cache_path() == "/tmp/plans.json"
