"""The collector settings a build runs under (factory/runner/gc_tuning.py)."""

from __future__ import annotations

import gc
import weakref

import pytest

from factory.errors import ConfigError
from factory.runner.gc_tuning import BUILD_THRESHOLDS, ENV, PYTHON_DEFAULTS, build_gc, gc_thresholds


def test_the_default_is_the_build_thresholds_and_the_variable_overrides_it(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert gc_thresholds() == BUILD_THRESHOLDS
    monkeypatch.setenv(ENV, " 700, 10,10 ")
    assert gc_thresholds() == PYTHON_DEFAULTS


@pytest.mark.parametrize("raw", ["lots", "1000,10", "0,10,10", "1,2,3,4", "-5,1,1"])
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv(ENV, raw)
    with pytest.raises(ConfigError) as info:
        gc_thresholds()
    assert str(info.value).startswith(f"{ENV}={raw!r}: expected three positive integers")


def test_within_a_build_setup_objects_are_frozen_and_afterwards_all_is_as_before():
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    setup_object = {"banks": [1, 2, 3]}
    with build_gc(BUILD_THRESHOLDS):
        assert gc.get_threshold() == BUILD_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert not any(obj is setup_object for obj in gc.get_objects())  # frozen: never scanned
        made_in_the_build = [[]]
        assert any(obj is made_in_the_build for obj in gc.get_objects())
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert any(obj is setup_object for obj in gc.get_objects())


def test_cycles_made_during_a_build_are_still_collected():
    class Node:
        pass

    with build_gc(BUILD_THRESHOLDS):
        node = Node()
        node.self = node  # a cycle: only the collector frees it
        ref = weakref.ref(node)
        del node
        live = [[] for _ in range(BUILD_THRESHOLDS[0] + 100)]  # past the young generation's threshold
        assert ref() is None  # collected by the collector's own young pass, not by a gc.collect()
        del live


def test_python_defaults_freeze_nothing():
    with build_gc(PYTHON_DEFAULTS):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == PYTHON_DEFAULTS
