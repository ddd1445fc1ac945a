"""The run config: defaults, parsing, identity, and every bad input rejected with one clear line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from memlib import config as C
from memlib.config import ConfigError, RunConfig
from memlib.models import is_known_model


def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_defaults_are_the_papers_section5_setting():
    cfg = RunConfig()
    assert (cfg.dataset, cfg.model, cfg.method, cfg.norm) == ("cifar10", "resnet18", "pgd_at", "linf")
    assert cfg.eps == pytest.approx(8 / 255) and cfg.alpha == pytest.approx(2 / 255) and cfg.steps == 10
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (0.1, 0.9, 5e-4, 128, 200)
    assert cfg.lr_milestones == [100, 150] and cfg.trades_beta == 6.0
    assert (cfg.te_momentum, cfg.te_weight, cfg.te_start, cfg.te_end) == (0.9, 300.0, 90, 150)


def test_every_field_has_a_comment(tmp_path):
    source = (C.__file__ and open(C.__file__).read())
    for f in dataclasses.fields(RunConfig):
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"config field {f.name} has no comment"


def test_fractions_and_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("eps: 8/255\nalpha: '2/255'\nepochs: 3\nlr_milestones: 2\n")
    cfg = RunConfig.load(path, ["steps=7", "eps=16/255", "augment=false", "model=wrn-28-10"])
    assert cfg.eps == pytest.approx(16 / 255) and cfg.alpha == pytest.approx(2 / 255)
    assert (cfg.epochs, cfg.steps, cfg.augment, cfg.model, cfg.lr_milestones) == (3, 7, False, "wrn-28-10", [2])


def test_run_id_depends_on_what_is_computed_only():
    a = RunConfig(epochs=3)
    assert a.run_id("x") == RunConfig(epochs=3, out_dir="elsewhere", progress=False, device="cpu").run_id("x")
    assert a.run_id("x") != RunConfig(epochs=4).run_id("x")
    assert a.run_id("x") != a.run_id("y")  # the resolved data source is part of the identity
    assert a.run_id("x").startswith("cifar10-resnet18-pgd_at-")


@pytest.mark.parametrize("values, needle", [
    ({"epoch": 3}, "unknown config key 'epoch' (did you mean 'epochs'?)"),
    ({"lr_rate": 0.1}, "unknown config key 'lr_rate'"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
    ({"model": "resnet1000"}, "unknown model 'resnet1000'"),
    ({"model": "wrn-27-10"}, "unknown model 'wrn-27-10'"),
    ({"method": "mart"}, "unknown method 'mart'"),
    ({"train_attack": "cw"}, "unknown train_attack 'cw'"),
    ({"norm": "l1"}, "unknown norm 'l1'"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
    ({"lr_schedule": "exponential"}, "unknown lr_schedule 'exponential'"),
    ({"data_source": "web"}, "unknown data_source 'web'"),
    ({"eps": 0}, "eps must be in (0, 1]"),
    ({"eps": -0.1}, "eps must be in (0, 1]"),
    ({"eps": 1.5}, "eps must be in (0, 1]"),
    ({"eps": "8/0"}, "expects float"),
    ({"alpha": 0}, "alpha (attack step size) must be > 0"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"eval_steps": 0}, "eval_steps must be >= 1"),
    ({"noise_rate": 1.2}, "noise_rate must be in [0, 1]"),
    ({"noise_rate": -0.1}, "noise_rate must be in [0, 1]"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"te_start": 160, "te_end": 150}, "te_start (160) must not be after te_end (150)"),
    ({"train_subset": -1}, "train_subset must be >= 0"),
    ({"epochs": "ten"}, "config key 'epochs' expects int"),
    ({"augment": "maybe"}, "config key 'augment' expects bool"),
    ({"lr_milestones": [150, 100]}, "lr_milestones must be increasing"),
    ({"dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"nesterov": True, "optimizer": "adam"}, "nesterov needs optimizer=sgd"),
])
def test_bad_values_are_rejected_with_one_line(values, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(values)
    assert needle in one_line_error(info)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        RunConfig.load(None, ["epochs"])
    assert "key=value" in one_line_error(info)
    with pytest.raises(ConfigError) as info:
        RunConfig.load(tmp_path / "nope.yaml")
    assert "config file not found" in one_line_error(info)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        RunConfig.load(bad)


def test_config_model_names_are_the_models_canonical_names():
    for name in ("resnet18", "preact_resnet18", "vgg16", "densenet121", "dla", "wrn-28-10", "wrn-34-10", "wrn-34-20",
                 "wrn-16-2"):
        assert RunConfig(model=name).model == name and is_known_model(name), name
    for name in ("wrn-27-10", "wrn-4-1", "resnet", "vit", "wrn", "ResNet18"):  # configs use canonical names only
        with pytest.raises(ConfigError, match="unknown model"):
            RunConfig(model=name)


def test_baseline_keys_defaults_identity_and_errors():
    """KD-SWA and Co-teaching keys (Table 2): the cited papers' defaults, no new run ids, one-line errors."""
    cfg = RunConfig()
    assert (cfg.kd_teacher, cfg.kd_std_teacher, cfg.kd_weight, cfg.kd_std_weight, cfg.kd_temperature) == \
        ("", "", 0.6, 0.1, 2.0)  # Chen et al.'s code: coef_kd2, coef_kd1, temperature
    assert (cfg.swa_start, cfg.coteach_forget_rate, cfg.coteach_gradual) == (106, 0.2, 10)
    assert {"kd_swa", "coteaching"} <= set(C.METHODS)
    assert {"kd_teacher", "kd_std_teacher"} <= set(C.WEIGHT_KEYS)
    assert RunConfig().run_id("x") == RunConfig(swa_start=106, coteach_forget_rate=0.2, kd_weight=0.6).run_id("x")
    # a teacher is identified by its run folder and file, not by where the project lives
    a = RunConfig(method="kd_swa", kd_teacher="/home/a/outputs/runs/cifar10-resnet18-pgd_at-abc/best.pt")
    b = RunConfig(method="kd_swa", kd_teacher="/elsewhere/runs/cifar10-resnet18-pgd_at-abc/best.pt")
    assert a.run_id("x") == b.run_id("x") and a.identity("x")["kd_teacher"] == "cifar10-resnet18-pgd_at-abc/best.pt"
    assert a.run_id("x") != a.replace(kd_teacher="/r/cifar10-resnet18-pgd_at-abc/final.pt").run_id("x")
    assert RunConfig(method="kd_swa", kd_teacher="t/best.pt", kd_std_teacher="s/final.pt", kd_weight=0.9,
                     kd_std_weight=0.1).kd_weight == 0.9


@pytest.mark.parametrize("values, needle", [
    ({"method": "kd_swa"}, "method kd_swa needs kd_teacher"),
    ({"kd_teacher": "t/best.pt"}, "kd_teacher and kd_std_teacher are used by method kd_swa only"),
    ({"method": "coteaching", "kd_std_teacher": "s/final.pt"}, "used by method kd_swa only; method is 'coteaching'"),
    ({"method": "kd_swa", "kd_teacher": "t/best.pt", "kd_weight": 1.5}, "kd_weight (1.5) and kd_std_weight"),
    ({"method": "kd_swa", "kd_teacher": "t/best.pt", "kd_std_teacher": "s/final.pt", "kd_weight": 0.95},
     "sum to at most 1"),
    ({"kd_weight": float("nan")}, "kd_weight (nan)"),
    ({"kd_temperature": 0}, "kd_temperature must be > 0"),
    ({"swa_start": 0}, "swa_start and coteach_gradual must be >= 1"),
    ({"coteach_gradual": 0}, "swa_start and coteach_gradual must be >= 1"),
    ({"coteach_forget_rate": 1.0}, "coteach_forget_rate must be in [0, 1); got 1.0"),
    ({"coteach_forget_rate": -0.1}, "coteach_forget_rate must be in [0, 1)"),
    ({"coteach_forget_rate": "lots"}, "config key 'coteach_forget_rate' expects float"),
    ({"kd_teachr": "t/best.pt"}, "did you mean 'kd_teacher'?"),
])
def test_bad_baseline_values_are_rejected_with_one_line(values, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(values)
    assert needle in one_line_error(info)


def test_choosing_a_tier_in_the_parameters_cell_loads_that_tiers_file(capsys):
    """A student who sets tier = "quick" in the cell gets the quick tier's values, not the smoke defaults
    written into outputs/quick/ (issue: the intro table became 10.00 everywhere under a quick-tier title)."""
    from memlib.config import check_notebook_parameters, notebook_defaults, read_yaml, resolve_bases

    ns = {**notebook_defaults("01_introduction"), "tier": "quick"}
    check_notebook_parameters(ns, "01_introduction")
    root = Path(__file__).resolve().parent.parent
    quick = resolve_bases(read_yaml(root / "params/01_introduction/quick.yaml", "p"), root)
    assert ns["base"] == quick["base"] and ns["eval_n"] == quick["eval_n"] == 500
    assert "4 value(s) loaded from params/01_introduction/quick.yaml" in capsys.readouterr().out
    again = dict(ns)
    check_notebook_parameters(again, "01_introduction")  # papermill's injected values: nothing to load or print
    assert again == ns and capsys.readouterr().out == ""


def test_a_hand_changed_value_never_reaches_a_committed_tiers_outputs():
    from memlib.config import check_notebook_parameters, notebook_defaults

    ns = {**notebook_defaults("01_introduction"), "tier": "quick", "eval_n": 37}
    with pytest.raises(ConfigError) as info:
        check_notebook_parameters(ns, "01_introduction")
    msg = str(info.value)
    assert "\n" not in msg and "eval_n = 37" in msg and "quick tier's value (500" in msg and "smoke" in msg
    smoke = {**notebook_defaults("01_introduction"), "tier": "smoke", "eval_n": 37}  # scratch: experiment freely
    check_notebook_parameters(smoke, "01_introduction")
    assert smoke["eval_n"] == 37
