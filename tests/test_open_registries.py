"""A new objective, likelihood and model family is one definition and one registry line:
added here at run time, each is accepted by ``vaelab train`` (the CLI's Python entry point,
in-process) with no other edit, and a family's and an objective's options become sections
of the run's config.yaml. The throwaway objective's option is named ``alpha`` like M2's: an
option belongs to its section, so the two do not clash."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
import yaml

from vaelab import objectives
from vaelab.api import load
from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.likelihoods import LIKELIHOODS, Bernoulli
from vaelab.models import MODELS, VAE
from vaelab.training.folder import read_metrics


@dataclass(frozen=True)
class ToyOptions:
    toy_width: int = 3  # toy: the width of its one hidden layer


class ToyVAE(VAE):
    """A VAE whose width is its own option."""

    options = ToyOptions

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> ToyVAE:
        width = cls.options_of(cfg).toy_width
        return super().from_config(replace(cfg, hidden=(width,)), image_shape)


class ToyBernoulli(Bernoulli):
    """Bernoulli under another name (it counts its calls, to show it is the one used)."""

    calls = 0

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        ToyBernoulli.calls += 1
        return super().log_prob(x, params)


@dataclass(frozen=True)
class ToyObjectiveOptions:
    alpha: float = 1.0  # toy_elbo: weight of the squared-mean-code penalty


def toy_penalty(config, n_train):
    alpha = config.train.options.alpha

    def term(model, x, y, labelled):
        penalty = model.latent_mean(x).mean(0).square().sum()
        return alpha * penalty, {"toy_penalty": penalty.detach()}

    return (term,)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(MODELS, "toy", ToyVAE)
    monkeypatch.setitem(LIKELIHOODS, "toy-bernoulli", ToyBernoulli)
    monkeypatch.setitem(objectives.OBJECTIVES, "toy_elbo", objectives.elbo)
    monkeypatch.setitem(objectives.OBJECTIVE_OPTIONS, "toy_elbo", ToyObjectiveOptions)
    monkeypatch.setitem(objectives.EXTRA_TERMS, "toy_elbo", toy_penalty)


def test_a_new_family_likelihood_and_objective_train_from_the_cli(registered, tmp_path):
    # A family added at run time has no flags in --help (read from the source); its options
    # come from a config file's section. The objective's alpha is a flag M2 also has.
    (tmp_path / "toy.yaml").write_text("toy:\n  toy_width: 5\n")
    out = tmp_path / "run"
    argv = ["train", "--config", str(tmp_path / "toy.yaml"), "--model", "toy",
            "--likelihood", "toy-bernoulli", "--objective", "toy_elbo", "--alpha", "2.5",
            "--dataset", "digits", "--latent-dim", "2", "--epochs", "1", "--batch-size", "256",
            "--progress", "false", "--report", "false", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["toy"] == {"toy_width": 5} and saved["toy_elbo"] == {"alpha": 2.5}
    assert "m2" not in saved and saved["model"]["likelihood"] == "toy-bernoulli"
    model = load(out)
    assert isinstance(model, ToyVAE) and model.encoder[1].out_features == 5
    assert isinstance(model.likelihood, ToyBernoulli) and ToyBernoulli.calls > 0
    (row,) = read_metrics(out)
    # The objective's own term is in the loss: the loss is the negative ELBO (beta 1, no
    # warm-up) plus alpha x a squared mean code, > 0 unless every code mean is exactly 0.
    assert row["train_loss"] > -row["train_bound"] + 1e-6


def test_an_option_of_another_family_is_refused_naming_who_takes_it(registered, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "vae", "--z1-dim", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "vaelab train: error: --z1-dim: an option of --model hvae only (this run: --model vae)"
    )
    assert main(["train", "--objective", "elbo", "--alpha", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "--alpha: an option of --model m2, --objective toy_elbo only "
        "(this run: --model vae, --objective elbo)"
    )
    assert not out.exists()  # nothing created before the inputs are validated
