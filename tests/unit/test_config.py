"""Unit tests of the settings table (pycluster.master.config, pycluster.core.tuning): how a reload
applies each key, the typed frozen RunConfig, the env-only tuning knobs. No processes."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping

import pytest

from pycluster.core import tuning
from pycluster.core.settings import Reload, Setting
from pycluster.errors import SettingsError
from pycluster.master import config

pytestmark = pytest.mark.timeout(60)


def _load(tmp_path, text: str = "", **flags):
    path = tmp_path / "pycluster.toml"
    path.write_text(text)
    return config.load({"app": "app:main", **flags}, config_path=str(path), environ={})


# -- how a reload applies each key ---------------------------------------------------------
@pytest.mark.parametrize("setting", config.SETTINGS + config.TUNING, ids=lambda s: s.name)
def test_every_setting_says_how_a_reload_applies_it(setting):
    assert isinstance(setting.on_reload, Reload)


def test_a_setting_cannot_be_declared_without_its_reload_class():
    with pytest.raises(TypeError):
        Setting("x", ("--x",), str, None, "help")  # type: ignore[call-arg]


@pytest.mark.parametrize("name, how", [
    ("timeout", Reload.LIVE), ("max_memory", Reload.LIVE), ("env", Reload.LIVE), ("graceful_timeout", Reload.LIVE),
    ("user", Reload.NEXT_GENERATION), ("chdir", Reload.NEXT_GENERATION), ("workers", Reload.NEXT_GENERATION),
    ("bind", Reload.RESTART), ("policy", Reload.RESTART), ("preload", Reload.RESTART), ("app", Reload.RESTART),
    ("control", Reload.RESTART), ("log_file", Reload.RESTART),
])
def test_reload_classes_of_some_keys(name, how):
    assert config.BY_NAME[name].on_reload is how


def test_a_changed_restart_only_key_is_kept_and_noted(tmp_path):
    running = _load(tmp_path, 'bind = ":8000"\npolicy = "rr"\ntimeout = 2\n')
    fresh = _load(tmp_path, 'bind = ":9000"\npolicy = "none"\ntimeout = 0\n')
    plan = config.plan_reload(running, fresh)
    assert plan.notes == ("bind changed in the config: it takes effect when the master restarts",
                          "policy changed in the config: it takes effect when the master restarts")
    assert plan.changed[Reload.RESTART] == ("bind", "policy")
    assert (plan.config.bind, plan.config.policy) == ((":8000",), "rr")  # kept
    assert plan.config.timeout == 0.0  # live: applied
    assert plan.changed[Reload.LIVE] == ("timeout",)
    assert running.timeout == 2.0  # the running config is not touched


def test_next_generation_keys_are_applied_and_an_unchanged_config_plans_nothing(tmp_path):
    running = _load(tmp_path, "workers = 2\n")
    fresh = _load(tmp_path, 'workers = 3\nchdir = "/tmp"\n')
    plan = config.plan_reload(running, fresh)
    assert plan.changed[Reload.NEXT_GENERATION] == ("workers", "chdir")
    assert (plan.config.workers, plan.config.chdir) == (3, "/tmp")
    assert plan.notes == ()
    same = config.plan_reload(fresh, fresh)
    assert all(keys == () for keys in same.changed.values()) and same.config == fresh


def test_flags_keep_their_source_across_a_reload(tmp_path):
    running = _load(tmp_path, "timeout = 1\n", graceful_timeout=5.0)
    fresh = _load(tmp_path, "timeout = 3\n", graceful_timeout=5.0)
    plan = config.plan_reload(running, fresh)
    assert plan.config.sources["timeout"] == str(tmp_path / "pycluster.toml")
    assert plan.config.sources["graceful_timeout"] == "--graceful-timeout"


# -- RunConfig -----------------------------------------------------------------------------------
def test_run_config_has_one_typed_attribute_per_setting():
    hints = typing.get_type_hints(config.RunConfig)
    names = [f.name for f in dataclasses.fields(config.RunConfig)]
    assert names == [s.name for s in config.SETTINGS] + ["sources", "file"]
    assert hints["timeout"] is float and hints["preload"] is bool and hints["app"] is str
    assert hints["bind"] == tuple[str, ...]
    assert hints["env"] == Mapping[str, str]
    assert hints["max_memory"] == int | None
    assert "__getattr__" not in vars(config.RunConfig)


def test_run_config_is_immutable(tmp_path):
    cfg = _load(tmp_path, 'env = { A = "1" }\nbind = [":8000"]\n')
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timeout = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.env["B"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.sources["timeout"] = "x"  # type: ignore[index]
    assert cfg.bind == (":8000",) and isinstance(cfg.bind, tuple)
    with pytest.raises(AttributeError):
        cfg.get("no_such_key")


def test_run_config_values_and_sources(tmp_path):
    cfg = _load(tmp_path, "workers = 3\n", timeout=2.5)
    assert cfg.values["workers"] == 3 and cfg.workers == 3
    assert cfg.sources["workers"] == str(tmp_path / "pycluster.toml")
    assert cfg.sources["timeout"] == "--timeout" and cfg.timeout == 2.5
    assert cfg.sources["policy"] == "default" and cfg.policy == "rr"
    assert cfg.file == str(tmp_path / "pycluster.toml")


def test_build_refuses_a_key_that_is_no_setting():
    with pytest.raises(TypeError, match="rr_window"):
        config.RunConfig.build({"app": "a:b", "rr_window": 3})


# -- env-only tuning knobs -------------------------------------------------------------------------
def test_tuning_knobs_are_env_only_and_restart_only():
    assert {s.env for s in tuning.TUNING} == {"PYCLUSTER_RR_WINDOW", "PYCLUSTER_HANDOFF_TIMEOUT",
                                              "PYCLUSTER_FORK_TIMEOUT", "PYCLUSTER_RR_PAIRS",
                                              "PYCLUSTER_RELOAD_NICE"}
    for s in tuning.TUNING:
        assert s.env_only and s.on_reload is Reload.RESTART and s.help
    assert not any(s.env_only for s in config.SETTINGS)
    assert not set(config.BY_NAME) & {s.name for s in tuning.TUNING}  # no TOML key, no flag


def test_tuning_defaults_and_values():
    assert (tuning.rr_window({}), tuning.handoff_timeout({}), tuning.fork_timeout({}), tuning.rr_pairs({})) \
        == (64, 5.0, 5.0, True)
    env = {"PYCLUSTER_RR_WINDOW": " 8 ", "PYCLUSTER_HANDOFF_TIMEOUT": "0.5", "PYCLUSTER_FORK_TIMEOUT": "3",
           "PYCLUSTER_RR_PAIRS": "0"}
    assert (tuning.rr_window(env), tuning.handoff_timeout(env), tuning.fork_timeout(env), tuning.rr_pairs(env)) \
        == (8, 0.5, 3.0, False)
    assert tuning.rr_window({"PYCLUSTER_RR_WINDOW": ""}) == 64  # empty: unset
    assert (tuning.reload_nice({}), tuning.reload_nice({"PYCLUSTER_RELOAD_NICE": "0"}),
            tuning.reload_nice({"PYCLUSTER_RELOAD_NICE": "19"})) == (10, 0, 19)


@pytest.mark.parametrize("var, value", [
    ("PYCLUSTER_RR_WINDOW", "abc"), ("PYCLUSTER_RR_WINDOW", "0"), ("PYCLUSTER_RR_WINDOW", "65537"),
    ("PYCLUSTER_RR_WINDOW", "1.5"), ("PYCLUSTER_HANDOFF_TIMEOUT", "soon"), ("PYCLUSTER_HANDOFF_TIMEOUT", "nan"),
    ("PYCLUSTER_HANDOFF_TIMEOUT", "-1"), ("PYCLUSTER_HANDOFF_TIMEOUT", "inf"), ("PYCLUSTER_FORK_TIMEOUT", "0"),
    ("PYCLUSTER_RR_PAIRS", "maybe"), ("PYCLUSTER_RELOAD_NICE", "-1"), ("PYCLUSTER_RELOAD_NICE", "20"),
    ("PYCLUSTER_RELOAD_NICE", "lots"),
])
def test_a_bad_tuning_value_is_an_error_naming_the_variable(var, value):
    with pytest.raises(SettingsError) as info:
        tuning.read(var, {var: value})
    message = str(info.value)
    assert message.startswith(f"environment {var}={value!r}: expected ") and "(default " in message
    assert "\n" not in message
    with pytest.raises(config.ConfigError, match=f"^environment {var}="):  # pycluster run: exit 2
        config.load({"app": "a:b"}, environ={var: value}, cwd="/nonexistent")


def test_the_rr_window_error_keeps_its_wording():
    with pytest.raises(SettingsError, match=r"^environment PYCLUSTER_RR_WINDOW='abc': expected a whole number of"
                                            r" hand-offs in flight per worker, 1 to 65536 \(default 64\)$"):
        tuning.rr_window({"PYCLUSTER_RR_WINDOW": "abc"})
