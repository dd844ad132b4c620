"""VQ-VAE (--model vqvae): the quantiser against brute force and closed forms, the gated
PixelCNN's causality (gradients) and normalisation (enumeration), the bound's two terms
computed independently, and the commands end to end on a tiny run."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli

from vaelab.cli import main
from vaelab.evaluation.vq import evaluate_vq
from vaelab.nn.pixelcnn import GatedPixelCNN
from vaelab.nn.quantize import VectorQuantizer, perplexity
from vaelab.training.checkpoint import CHECKPOINT, load_checkpoint


def ready(vq: VectorQuantizer, codebook: torch.Tensor) -> VectorQuantizer:
    """A quantiser with a hand-set codebook, past its first-batch initialisation."""
    with torch.no_grad():
        vq.codebook.copy_(codebook)
        vq.embed_sum.copy_(codebook)
        vq.initialised.fill_(True)
    return vq


def test_quantisation_returns_the_nearest_code_by_brute_force():
    torch.manual_seed(0)
    vq = ready(VectorQuantizer(17, 5), torch.randn(17, 5)).eval()
    z = torch.randn(4, 5, 3, 2)
    z_q, codes, _, _ = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5).double()
    brute = torch.tensor(
        [min(range(17), key=lambda k: float(((v - vq.codebook[k].double()) ** 2).sum()))
         for v in flat]
    )  # fmt: skip
    assert torch.equal(codes.flatten(), brute)
    assert torch.allclose(z_q.permute(0, 2, 3, 1).reshape(-1, 5), vq.codebook[brute])


def test_the_straight_through_gradient_is_the_identity_on_the_encoder_output():
    torch.manual_seed(1)
    vq = ready(VectorQuantizer(8, 3), torch.randn(8, 3)).eval()
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, _, _, _ = vq(z)
    g = torch.randn_like(z_q)
    (z_q * g).sum().backward()
    assert torch.equal(z.grad, g)  # d(z_q)/d(z_e) = I exactly, whatever the codes


def test_the_ema_update_equals_its_closed_form_on_a_hand_made_batch():
    vq = ready(VectorQuantizer(2, 1, "ema", decay=0.5, eps=1e-5, restart_below=0.0),
               torch.tensor([[0.0], [10.0]]))  # fmt: skip
    z = torch.tensor([1.0, 2.0, 9.0]).view(1, 1, 1, 3)  # codes 0, 0, 1
    vq.train()(z)
    # N = 0.5 * 1 + 0.5 * (2, 1);  m = 0.5 * (0, 10) + 0.5 * (3, 9)
    n_k = torch.tensor([1.5, 1.0], dtype=torch.float64)
    m_k = torch.tensor([1.5, 9.5], dtype=torch.float64)
    n = n_k.sum()
    smoothed = (n_k + 1e-5) / (n + 2 * 1e-5) * n
    assert torch.allclose(vq.cluster_size.double(), n_k)
    assert torch.allclose(vq.codebook.double()[:, 0], m_k / smoothed, rtol=1e-6)
    assert vq.epoch_counts.tolist() == [2.0, 1.0]


def test_a_dead_code_is_restarted_at_an_encoder_vector_of_the_batch():
    torch.manual_seed(2)
    book = torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]])  # code 2: never nearest
    vq = ready(VectorQuantizer(3, 2, "loss", decay=0.5, restart_below=0.9), book).train()
    z = torch.rand(1, 2, 4, 4)
    vq(z)  # code 2's usage average: 0.5 * 1 + 0.5 * 0 < 0.9
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert int(vq.restarts) == 1
    assert (flat == vq.codebook[2]).all(1).any()  # now one of the batch's vectors
    assert vq.cluster_size[2] == 1.0 and torch.equal(vq.codebook[:2], book[:2])


def test_the_commitment_loss_moves_the_encoder_and_the_codebook_loss_the_codebook():
    torch.manual_seed(3)
    encoder = nn.Conv2d(2, 3, 1)
    vq = ready(VectorQuantizer(4, 3, "loss"), torch.randn(4, 3)).eval()
    x = torch.randn(2, 2, 3, 3)
    for loss_index, moves_encoder in ((2, True), (3, False)):
        encoder.zero_grad(set_to_none=True)
        vq.zero_grad(set_to_none=True)
        z = encoder(x)
        out = vq(z)
        out[loss_index].sum().backward()
        enc_grad = encoder.weight.grad
        book_grad = vq.codebook.grad
        if moves_encoder:  # ||z_e - sg(e)||^2: the encoder only
            assert enc_grad is not None and enc_grad.abs().sum() > 0
            assert book_grad is None or not book_grad.any()
        else:  # ||sg(z_e) - e||^2: the codebook only, d/de = 2 (e - z_e) summed per code
            assert enc_grad is None or not enc_grad.any()
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 3)
            codes = out[1].flatten()
            expect = torch.zeros(4, 3).index_add_(0, codes, 2 * (vq.codebook[codes] - flat))
            assert torch.allclose(book_grad, expect.detach(), atol=1e-5)


def test_pixelcnn_output_at_a_position_depends_only_on_earlier_positions():
    torch.manual_seed(4)
    h, w = 4, 5
    net = GatedPixelCNN(6, (h, w), width=8, layers=4, kernel=3)
    x = torch.randn(1, 8, h, w, requires_grad=True)
    logits = net.logits_of(x)
    for i, j in itertools.product(range(h), range(w)):
        (grad,) = torch.autograd.grad(logits[0, :, i, j].sum(), x, retain_graph=True)
        seen = grad.abs().sum(1)[0] > 0  # (h, w): which inputs position (i, j) reads
        order = torch.arange(h * w).view(h, w)
        assert not seen[order >= i * w + j].any(), (i, j)
        if i * w + j > 0:  # and it does read its left neighbour or the row above (no blind)
            before = (i, j - 1) if j > 0 else (i - 1, j)
            assert seen[before], (i, j)
    # no blind spot: with 4 layers, (3, 2) sees the upper-right (2, 4) through the v stack
    (grad,) = torch.autograd.grad(logits[0, :, 3, 2].sum(), x)
    assert grad[0, :, 2, 4].abs().sum() > 0


def test_pixelcnn_probabilities_sum_to_one_over_every_grid_of_a_tiny_case():
    torch.manual_seed(5)
    net = GatedPixelCNN(3, (2, 2), width=8, layers=2).double()
    with torch.no_grad():  # make it far from uniform
        for p in net.parameters():
            p.mul_(3.0)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).view(81, 2, 2)
    with torch.no_grad():
        total = torch.logsumexp(net.log_prob(grids), 0)
    assert abs(float(total)) < 1e-10  # log sum_k p(k) = 0: a distribution over 3^4 grids
    assert float(net.log_prob(grids).exp().max()) > 3 / 81  # and not the uniform one


def test_perplexity_is_k_for_uniform_use_and_one_for_a_single_code():
    assert perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0])) == pytest.approx(4.0)
    assert perplexity(torch.tensor([0.0, 9.0, 0.0])) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vq") / "run"
    argv = ["train", "--model", "vqvae", "--arch", "conv", "--hidden", "8,8", "--blocks", "1",
            "--latent-dim", "4", "--codes", "8", "--dataset", "digits", "--binarize", "static",
            "--epochs", "1", "--batch-size", "256", "--progress", "false", "--report", "false",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_sampling_without_a_prior_says_so_in_one_line(vq_run, capsys):
    assert main(["sample", str(vq_run)]) != 0
    err = capsys.readouterr().err
    assert "no code prior" in err and "vaelab train-prior" in err and "Traceback" not in err


def test_the_printed_bound_equals_its_two_terms_computed_independently(vq_run, capsys):
    assert main(["train-prior", str(vq_run), "--epochs", "1", "--width", "8", "--layers", "2"]) == 0
    assert (vq_run / "prior" / "prior.safetensors").is_file()
    assert main(["train-prior", str(vq_run), "--epochs", "1"]) != 0  # exists: not replaced
    assert "--resume or --replace" in capsys.readouterr().err
    assert main(["train-prior", str(vq_run), "--epochs", "2", "--resume"]) == 0
    meta = json.loads((vq_run / "prior" / "prior.json").read_text())
    assert meta["epoch"] == 2 and meta["options"]["width"] == 8  # resumed with its options
    assert main(["evaluate", str(vq_run), "--json", str(vq_run / "ev.json")]) == 0
    result = json.loads((vq_run / "ev.json").read_text())
    import vaelab
    from vaelab.training.code_prior import read_prior

    run = vaelab.open_run(vq_run)
    model, (prior, _) = run.model, read_prior(run)
    data = vaelab.api.load_test_images(run)
    from vaelab.data.prepare import eval_images

    x = eval_images(data.test_x, "static", run.config.train.seed).double() / 255
    model = model.double()
    prior = prior.double()
    with torch.no_grad():
        z = model.encoder(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
        codes = torch.cdist(flat, model.quantizer.codebook).argmin(1).view(len(x), *model.grid)
        logits = model.decoder(model.quantizer.codebook[codes].permute(0, 3, 1, 2))[:, 0]
        recon = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
        # log p(k) by the chain rule, one position at a time, the later ones set to junk
        log_pk = torch.zeros(len(x), dtype=torch.float64)
        h, w = model.grid
        for i, j in itertools.product(range(h), range(w)):
            partial = codes.clone()
            later = torch.arange(h * w).view(h, w) >= i * w + j
            partial[:, later] = 7 - partial[:, later]  # anything: the mask must ignore it
            partial[:, i, j] = codes[:, i, j]
            logp = torch.log_softmax(prior(partial)[:, :, i, j], 1)
            log_pk += logp.gather(1, codes[:, i, j, None])[:, 0]
    bits = float((-(recon + log_pk)).mean()) / (math.prod(model.image_shape) * math.log(2))
    # rel 1e-4: the command computes in float32 (~1e-7 per term, ~100 terms, sums of ~50
    # nats); this check in float64. A wrong code, term or scale is off by far more.
    assert result["bound_prior_bits_per_dim"] == pytest.approx(bits, rel=1e-4)
    uniform = float(-recon.mean()) + h * w * math.log(8)
    assert result["bound_uniform_nats"] == pytest.approx(uniform, rel=1e-4)
    out = capsys.readouterr().out
    assert "bound_prior_bits_per_dim" in out and "deterministic encoder" in out
    assert main(["sample", str(vq_run), "-n", "4", "--temperature", "0.5"]) == 0


def test_evaluate_vq_reports_usage_of_the_codes_it_assigned():
    torch.manual_seed(6)
    from vaelab.config import ModelConfig
    from vaelab.models import build_model

    cfg = ModelConfig(model="vqvae", arch="conv", hidden=(4,), blocks=1, latent_dim=2)
    model = build_model(cfg, (1, 4, 4)).eval()
    x = (torch.rand(10, 1, 4, 4) * 255).to(torch.uint8)
    result = evaluate_vq(model, x, None)
    codes = model.codes(x.float() / 255)
    assert result["codes_used"] == len(codes.unique())
    assert "bound_prior_nats" not in result  # no prior: only the uniform-prior bound


def test_training_resumes_bit_exactly_with_the_quantiser_state(tmp_path):
    common = ["--model", "vqvae", "--arch", "conv", "--hidden", "8", "--blocks", "1",
              "--latent-dim", "3", "--codes", "6", "--dataset", "digits", "--batch-size", "256",
              "--progress", "false", "--report", "false"]  # fmt: skip
    assert main(["train", *common, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *common, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", *common, "--epochs", "2", "--resume", "--out", str(tmp_path / "b")]) == 0
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT).model_state()
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT).model_state()
    assert any("quantizer.cluster_size" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {"codes_used", "code_perplexity", "code_usage"} <= set(rows[-1])
    assert 1.0 <= rows[-1]["code_perplexity"] <= 6.0


def test_a_vq_flag_on_another_model_and_elbo_on_vqvae_are_refused(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main([*base, "--model", "vqvae", "--arch", "conv", "--objective", "elbo"]) != 0
    assert "--objective vq" in capsys.readouterr().err
    assert main([*base, "--model", "vqvae", "--arch", "mlp"]) != 0
    assert "--arch conv or resnet" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_explorer_reads_and_decodes_an_edited_code_grid(vq_run):
    from vaelab.web.app import build_app

    app = build_app(vq_run, limit=20)
    status, _, body = app.handle("POST", "/api/codes", json.dumps({"index": 3}).encode())
    got = json.loads(body)
    assert status == 200 and len(got["codes"]) == 2 and got["num_codes"] == 8
    edited = [row[:] for row in got["codes"]]
    model = app.explorer.model
    x = app.explorer.test_image(3)[None].float() / 255
    assert got["codes"] == model.codes(x)[0].tolist()  # the image's own grid
    edited[0][0] = (edited[0][0] + 1) % 8  # one cell changed: that grid's decoding
    status, _, body = app.handle("POST", "/api/codes", json.dumps({"codes": edited}).encode())
    from vaelab.web.fields import png_data_url

    with torch.no_grad():
        expect = model.likelihood.mean(model.decode_codes(torch.tensor([edited])))[0]
    assert status == 200 and json.loads(body)["image"] == png_data_url(expect.clamp(0, 1))
    status, _, body = app.handle("POST", "/api/codes", json.dumps({"codes": [[9]]}).encode())
    assert status == 400 and "2 rows of 2 integers in [0, 8)" in json.loads(body)["error"]


def test_the_code_prior_resumes_bit_exactly(vq_run, tmp_path):
    import shutil

    from safetensors.torch import load_file

    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        shutil.copytree(vq_run, folder, ignore=shutil.ignore_patterns("prior"))
    small = ["--width", "8", "--layers", "2"]
    assert main(["train-prior", str(a), "--epochs", "2", *small]) == 0
    assert main(["train-prior", str(b), "--epochs", "1", *small]) == 0
    assert main(["train-prior", str(b), "--epochs", "2", "--resume"]) == 0
    ta, tb = (load_file(f / "prior" / "prior.safetensors") for f in (a, b))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_an_abandoned_code_is_restarted_after_restart_after_idle_steps_not_before():
    """A code that had a large usage average (50 vectors per batch) and is no longer
    assigned: its EMA (decay 0.99) would stay above 0.9 for ~400 steps; the idle rule
    restarts it after exactly ``restart_after`` unassigned steps."""
    torch.manual_seed(4)
    book = torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]])
    vq = ready(VectorQuantizer(3, 2, "loss", decay=0.99, restart_below=0.9, restart_after=3),
               book).train()  # fmt: skip
    vq.cluster_size.fill_(50.0)
    for step in range(1, 4):
        vq(torch.rand(1, 2, 4, 4))
        assert int(vq.restarts) == (1 if step == 3 else 0), step
    assert vq.cluster_size[2] == 1.0 and vq.idle[2] == 0 and vq.codebook[2].max() <= 1.0


def test_restarts_go_to_the_vectors_the_codebook_serves_worst_one_code_per_vector():
    """k-means++ placement: every batch vector sits on code 0 or 1 except (50, 50) twice and
    (70, 70) once, so the two dead codes must land on (50, 50) and (70, 70) (a pick's
    duplicate has distance 0 to it), whatever the draw; uniform picks would land on the
    many vectors at codes 0 and 1 nearly always."""
    book = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-9.0, 9.0], [9.0, -9.0]])
    for seed in range(5):
        torch.manual_seed(seed)
        vq = ready(VectorQuantizer(4, 2, "loss", restart_below=0.0, restart_after=1), book)
        near = [[0.0, 0.0]] * 20 + [[1.0, 1.0]] * 20
        flat = torch.tensor([*near, [50.0, 50.0], [50.0, 50.0], [70.0, 70.0]])
        vq.train()(flat.t().reshape(1, 2, 1, -1))  # codes 2 and 3: unassigned, so dead
        placed = {tuple(v) for v in vq.codebook[2:].tolist()}
        assert placed == {(50.0, 50.0), (70.0, 70.0)}, seed
        assert torch.equal(vq.codebook[:2], book[:2])


def test_the_first_batch_seeds_the_codebook_over_its_vectors_not_on_the_crowd():
    """1000 copies of one vector and one other: k-means++ seeding of K = 2 takes both
    values (uniform picks with replacement take the crowd twice with probability 0.998)."""
    for seed in range(5):
        torch.manual_seed(seed)
        vq = VectorQuantizer(2, 2, "ema", restart_below=0.0, restart_after=0).train()
        flat = torch.cat([torch.zeros(1000, 2), torch.tensor([[5.0, 5.0]])])
        vq(flat.t().reshape(1, 2, 1, -1))
        counts = vq.take_epoch_counts()  # both codes assigned: one per value
        assert counts.tolist() in ([1000.0, 1.0], [1.0, 1000.0]), seed


def test_a_checkpoint_from_before_the_idle_counts_still_loads():
    vq = VectorQuantizer(5, 3)
    state = {k: v for k, v in vq.state_dict().items() if k != "idle"}
    fresh = VectorQuantizer(5, 3)
    fresh.idle.fill_(7)
    fresh.load_state_dict(state)  # strict: a missing key would raise
    assert fresh.idle.tolist() == [0] * 5


def test_spread_picks_of_identical_vectors_fall_back_to_uniform_picks():
    from vaelab.nn.quantize import spread_picks

    torch.manual_seed(5)
    picks = spread_picks(torch.ones(6, 3), 4)  # every distance 0 after the first pick
    assert picks.shape == (4,) and bool((picks >= 0).all() and (picks < 6).all())
    far = spread_picks(torch.tensor([[0.0], [0.0], [3.0]]), 2, torch.tensor([0.0, 0.0, 9.0]))
    assert far[0] == 2  # the only vector away from the codes comes first
