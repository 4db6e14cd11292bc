"""Tokenizer training (LaVIT stage 1), GVT patch distillation and patch-label pretraining on tiny models."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gvt import GVTVisionConfig, GVTVisionTokenizer
from gvt.training.losses import (
    code_perplexity,
    code_usage_counts,
    normalize_codebook_,
    patch_distillation_loss,
    restart_dead_codes_,
    tokenizer_loss,
)
from gvt.training.tokenizer_training import (
    TokenizerObjective,
    evaluate_tokenizer,
    pretrain_encoder_on_patch_labels,
    train_patch_distillation,
    train_tokenizer,
)

torch.set_num_threads(1)


def tiny_tokenizer(seed: int = 0, **overrides) -> GVTVisionTokenizer:
    torch.manual_seed(seed)
    config = GVTVisionConfig.from_preset(
        "tiny", **{"decoder_output_dim": 64, "decoder_types": ["highres"], "codebook_size": 64, **overrides}
    )
    return GVTVisionTokenizer(config)


def tiny_images(count: int = 8, seed: int = 0, size: int = 112) -> torch.Tensor:
    """Blocky random images: smooth enough that patches differ in content, not only in noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 3, 4, 4, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="nearest")


def test_loss_parts_finite_and_gradients_reach_the_right_modules():
    model = tiny_tokenizer()
    model.encoder.requires_grad_(False)
    model.train()
    objective = TokenizerObjective(model, "highres", target_keep_ratio=0.25)
    losses, output = objective(tiny_images(2), torch.Generator().manual_seed(0))
    for name in ("loss", "reconstruction", "codebook", "commitment", "keep_ratio_penalty", "selector_entropy"):
        value = getattr(losses, name)
        assert value.ndim == 0 and torch.isfinite(value), name
    assert losses.keep_ratio_penalty > 0

    # The selector gets gradient from the keep-ratio penalty alone ...
    model.zero_grad()
    losses.keep_ratio_penalty.backward(retain_graph=True)
    assert model.token_selector.score_head[-1].weight.grad.abs().sum() > 0
    # ... and from the reconstruction through the straight-through keep decision and VQ estimator.
    model.zero_grad()
    losses.reconstruction.backward(retain_graph=True)
    assert model.token_selector.score_head[-1].weight.grad.abs().sum() > 0
    assert model.quantizer.project_in[0].weight.grad.abs().sum() > 0
    assert model.token_merger.norm.weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.weight.grad is None or model.quantizer.codebook.weight.grad.abs().sum() == 0
    # The codebook loss moves the codebook, the commitment the quantizer input projection.
    model.zero_grad()
    losses.codebook.backward(retain_graph=True)
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0
    model.zero_grad()
    losses.commitment.backward(retain_graph=True)
    assert model.quantizer.project_in[0].weight.grad.abs().sum() > 0
    # The frozen encoder gets nothing; its output carries no graph.
    model.zero_grad()
    losses.loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert not output.encoder_hidden_states.requires_grad


def test_normalize_codebook_and_dead_code_restart():
    model = tiny_tokenizer()
    with torch.no_grad():
        model.quantizer.codebook.weight.mul_(3.0)
    normalize_codebook_(model)
    torch.testing.assert_close(model.quantizer.codebook.weight.norm(dim=-1), torch.ones(64))

    # Only codes 0 and 1 were used: every other code is dead after 5 idle steps.
    codebook_size = model.config.codebook_size
    ids = torch.tensor([[0, 1, 1, 0]])
    counts = code_usage_counts(ids, torch.ones_like(ids), codebook_size)
    assert int((counts > 0).sum()) == 2 and code_perplexity(counts) == pytest.approx(2.0)
    steps_since_used = torch.full((codebook_size,), 5, dtype=torch.long)
    steps_since_used[counts > 0] = 0
    before = model.quantizer.codebook.weight.detach().clone()
    recent = torch.randn(200, model.config.codebook_dim, generator=torch.Generator().manual_seed(1))
    restarted = restart_dead_codes_(model, steps_since_used, recent, 5, torch.Generator().manual_seed(0))
    after = model.quantizer.codebook.weight.detach()
    assert sorted(restarted.tolist()) == list(range(2, codebook_size))
    torch.testing.assert_close(after[:2], before[:2])
    assert not torch.allclose(after[2:], before[2:])
    torch.testing.assert_close(after.norm(dim=-1), torch.ones(codebook_size))
    assert (steps_since_used == 0).all()
    # Restarted codes sit on recent inputs, so quantizing those inputs now uses far more than 2 codes.
    new_ids = (F.normalize(recent, dim=-1) @ after.t()).argmax(dim=1)
    assert new_ids.unique().numel() > 20


def test_train_tokenizer_lowers_reconstruction_and_moves_keep_ratio():
    model = tiny_tokenizer()
    images = tiny_images(8)
    before = evaluate_tokenizer(model, images)
    history = train_tokenizer(
        model,
        images,
        num_steps=40,
        learning_rate=2e-3,
        batch_size=8,
        target_keep_ratio=0.25,
        keep_ratio_weight=20.0,
        dead_code_threshold=10,
        progress_bar=False,
    )
    assert len(history) == 40
    first, last = sum(history.reconstruction[:5]) / 5, sum(history.reconstruction[-5:]) / 5
    assert last < first - 0.1, (first, last)
    # Soft keep ratio starts near 0.5 and moves toward the 0.25 target.
    assert history.keep_ratio[0] > 0.4 and history.keep_ratio[-1] < history.keep_ratio[0] - 0.1
    # Codebook rows stay on the unit sphere; codes get used; the model is handed back frozen-as-before, in eval mode.
    torch.testing.assert_close(model.quantizer.codebook.weight.norm(dim=-1), torch.ones(64))
    assert max(history.codebook_usage) > 0.1
    assert not model.training and all(p.requires_grad for p in model.parameters())
    after = evaluate_tokenizer(model, images, selection="sample")
    assert after.reconstruction < before.reconstruction - 0.1


def test_patch_distillation_lowers_its_loss():
    student = tiny_tokenizer(seed=1, num_hidden_layers=1)
    teacher = tiny_tokenizer(seed=2, hidden_size=32, num_attention_heads=2, decoder_types=[]).encoder
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    images = tiny_images(8)
    output = train_patch_distillation(student, teacher, images, num_steps=30, learning_rate=3e-3, progress_bar=False)
    assert isinstance(output.head, nn.Linear) and output.head.out_features == 32
    assert sum(output.losses[-5:]) / 5 < sum(output.losses[:5]) / 5 - 0.05
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))

    loss = patch_distillation_loss(torch.ones(1, 4, 8), torch.ones(1, 4, 8), "smooth_l1")
    assert float(loss.loss) == 0.0 and float(loss.cosine_similarity) == pytest.approx(1.0)


def test_pretrain_encoder_on_patch_labels():
    model = tiny_tokenizer(num_hidden_layers=1)
    images = tiny_images(8)
    # Label each patch by the sign of its mean red value: learnable from the pixels.
    patches = F.avg_pool2d(images[:, :1], model.config.patch_size).flatten(1)
    labels = (patches > 0).long()
    output = pretrain_encoder_on_patch_labels(
        model, images, labels, num_steps=30, learning_rate=3e-3, batch_size=8, progress_bar=False
    )
    assert sum(output.losses[-5:]) / 5 < output.losses[0] - 0.2
    assert output.accuracies[-1] > 0.8
    with pytest.raises(ValueError, match="patches per image"):
        pretrain_encoder_on_patch_labels(model, images, labels[:, :10], num_steps=1, progress_bar=False)


def test_bad_input_raises_clear_errors():
    images = tiny_images(2)
    with pytest.raises(ValueError, match="decoder_output_dim"):
        train_tokenizer(tiny_tokenizer(decoder_output_dim=96), images, num_steps=1, progress_bar=False)
    model = tiny_tokenizer()
    with pytest.raises(ValueError, match="Unknown decoder_type"):
        train_tokenizer(model, images, num_steps=1, decoder_type="midres", progress_bar=False)
    with pytest.raises(ValueError, match="no 'lowres' decoder"):
        train_tokenizer(model, images, num_steps=1, decoder_type="lowres", progress_bar=False)
    for ratio in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="target_keep_ratio"):
            train_tokenizer(model, images, num_steps=1, target_keep_ratio=ratio, progress_bar=False)
    output = model(images)
    with pytest.raises(ValueError, match="decoder_output_dim"):
        tokenizer_loss(output, torch.zeros(2, 64, 96), output.encoder_hidden_states[:, 1:], 0.5)
    with pytest.raises(ValueError, match="loss_type"):
        patch_distillation_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), "l2")


def test_learning_rate_schedules():
    model = tiny_tokenizer(num_hidden_layers=1)
    images = tiny_images(4)
    labels = (F.avg_pool2d(images[:, :1], model.config.patch_size).flatten(1) > 0).long()
    output = pretrain_encoder_on_patch_labels(
        model, images, labels, num_steps=4, lr_scheduler_type="cosine", warmup_steps=1, progress_bar=False
    )
    assert len(output.losses) == 4
    history = train_tokenizer(model, images, num_steps=3, lr_scheduler_type="linear", progress_bar=False)
    assert len(history) == 3
    with pytest.raises(ValueError, match="warmup_steps"):
        train_tokenizer(model, images, num_steps=1, warmup_steps=-1, progress_bar=False)
    with pytest.raises(ValueError):
        train_tokenizer(model, images, num_steps=1, lr_scheduler_type="sideways", progress_bar=False)


class Crash(Exception):
    """Stands for a run that dies after some step."""


def test_checkpoints_resume_to_the_uninterrupted_run(tmp_path):
    images = tiny_images(6)
    labels = torch.randint(0, 3, (6, 64), generator=torch.Generator().manual_seed(1))
    common = dict(num_steps=4, batch_size=2, progress_bar=False, code_labels=labels, code_classification_weight=0.5,
                  dead_code_threshold=1)  # fmt: skip
    uninterrupted = tiny_tokenizer()
    expected = train_tokenizer(uninterrupted, images, **common)

    def crash_after_three(step, history):
        if step == 3:
            raise Crash

    model = tiny_tokenizer()
    with pytest.raises(Crash):
        train_tokenizer(model, images, **common, save_steps=2, checkpoint_dir=tmp_path, callback=crash_after_three)
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint-2"]
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train_tokenizer(tiny_tokenizer(), images, **common, save_steps=2, checkpoint_dir=tmp_path)

    resumed_model = tiny_tokenizer(seed=5)  # other initial weights: the checkpoint's replace them
    resumed = train_tokenizer(
        resumed_model, images, **common, save_steps=2, checkpoint_dir=tmp_path, resume_from_checkpoint=True
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert resumed.loss == expected.loss and resumed.restarted_codes == expected.restarted_codes
    assert torch.equal(resumed.code_probe.weight, expected.code_probe.weight)

    with pytest.raises(FileNotFoundError, match="not a tokenizer checkpoint"):
        train_tokenizer(tiny_tokenizer(), images, **common, resume_from_checkpoint=tmp_path)
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        train_tokenizer(tiny_tokenizer(), images, **common, save_steps=2)
