"""Config: strict keys, typed coercion, file formats, precedence."""

from pathlib import Path

import pytest

from vaelab.config import Config, load_config, save_config, validate, with_overrides
from vaelab.errors import VaelabError


def test_flags_are_coerced_to_field_types():
    cfg = with_overrides(Config(), {"latent-dim": "8", "hidden": "300,300", "beta": "0.5",
                                    "compile": "true", "clip_grad": "none"}, "cli")  # fmt: skip
    assert cfg.model.latent_dim == 8 and cfg.model.hidden == (300, 300)
    assert cfg.train.beta == 0.5 and cfg.train.compile is True and cfg.train.clip_grad is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("latent_dim", "abc", "expected int"), ("compile", "maybe", "true or false"),
     ("no_such_option", 1, "unknown option"), ("epochs", 2.5, "expected an integer")],
)  # fmt: skip
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(VaelabError, match=message):
        with_overrides(Config(), {key: value}, "cli")


def test_yaml_nested_and_flat_and_toml(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  latent_dim: 7\nepochs: 3\n")
    (tmp_path / "b.toml").write_text('[train]\nlr = 0.01\n[data]\ndataset = "digits"\n')
    a, b = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "b.toml")
    assert (a.model.latent_dim, a.train.epochs) == (7, 3)
    assert (b.train.lr, b.data.dataset) == (0.01, "digits")


def test_unknown_key_in_file_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  latnt_dim: 7\n")
    with pytest.raises(VaelabError, match=r"c\.yaml: unknown option 'latnt_dim'"):
        load_config(tmp_path / "c.yaml")


def test_round_trip_through_yaml(tmp_path):
    cfg = with_overrides(Config(), {"hidden": "32,64", "arch": "conv", "seed": 3}, "t")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("key", ["latent_dim", "batch_size", "samples"])
def test_zero_sizes_rejected(key):
    with pytest.raises(VaelabError, match=f"--{key.replace('_', '-')}: must be at least 1"):
        validate(with_overrides(Config(), {key: 0}, "cli"))


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/*.yaml")))
def test_shipped_configs_load_and_validate(path):
    validate(load_config(path))


def test_model_is_a_field_as_well_as_a_section(tmp_path):
    # `model: deep` (flat) names the model; `model: {latent_dim: 5}` is the section.
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: deep\nlatent_dim: 7\n")
    cfg = load_config(flat)
    assert cfg.model.model == "deep" and cfg.model.latent_dim == 7
    nested = tmp_path / "nested.yaml"
    nested.write_text("model: {model: cvae, latent_dim: 5}\ntrain: {epochs: 3}\n")
    cfg = load_config(nested)
    assert (cfg.model.model, cfg.model.latent_dim, cfg.train.epochs) == ("cvae", 5, 3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: 3\n")
    with pytest.raises(VaelabError, match="section 'train' must be a mapping"):
        load_config(bad)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("epochs", -3, "--epochs: must be at least 0, got -3"),
        ("lr", 0.0, "--lr: must be > 0, got 0.0"),
        ("sigma", -1.0, "--sigma: must be > 0, got -1.0"),
        ("hidden", "64,0", "--hidden: each value must be at least 1, got (64, 0)"),
    ],
)
def test_each_bad_flag_gets_its_own_message(flag, value, message):
    with pytest.raises(VaelabError) as err:
        validate(with_overrides(Config(), {flag: value}, "t"))
    assert str(err.value) == message
