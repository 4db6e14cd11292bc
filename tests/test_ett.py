"""ETT: the joint loss in one forward, the stage schedule of ETTCallback under Trainer, exact checkpoint resume."""

import functools
import json
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainerState
from without_gvt import run_without_gvt

from gvt.data import build_synthetic_dataset, to_caption_rows
from gvt.tiny_random import build_tiny_random
from gvt.training.collator import GVTDataCollator
from gvt.training.ett import ETTCallback, ett_parameter_groups, prepare_ett_model
from gvt.training.llm_training import training_arguments
from gvt.training.losses import straight_through_codes, tokenizer_loss

torch.set_num_threads(1)

WATCHED = {
    "codebook": "vision_tokenizer.quantizer.codebook.weight",
    "merger": "vision_tokenizer.token_merger.norm.weight",
    "decoder": "vision_tokenizer.decoders.highres.in_proj.weight",
    "projector": "codebook_projector.0.weight",
    "llm": "language_model.model.layers.0.self_attn.q_proj.weight",
    "encoder": "vision_tokenizer.encoder.patch_embedding.weight",
}


def ett_model():
    return build_tiny_random("codebook", seed=0, vision_config={"decoder_output_dim": 64})


@functools.cache
def caption_rows():
    return to_caption_rows(build_synthetic_dataset(8, 0, 0, image_size=112)["train"])


class Snapshots(TrainerCallback):
    """Copies of the watched parameters after every optimizer step (index 0: before training)."""

    def __init__(self):
        self.steps: dict[int, dict[str, torch.Tensor]] = {}

    def _take(self, model, step):
        params = dict(model.named_parameters())
        self.steps[step] = {key: params[name].detach().clone() for key, name in WATCHED.items()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._take(model, state.global_step)


def run(output_dir, callback, max_steps=4, resume=None, save_steps=None, snapshots=None):
    model, processor = ett_model()
    save = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {}
    args = training_arguments(
        output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        seed=0,
        disable_tqdm=True,
        **save,
    )
    callbacks = [callback] + ([snapshots] if snapshots is not None else [])
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=caption_rows(),
        data_collator=GVTDataCollator(processor),
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, model


def test_joint_loss_is_caption_plus_alpha_reconstruction_in_one_forward():
    model, processor = ett_model()
    batch = GVTDataCollator(processor)([caption_rows()[0], caption_rows()[1]])
    model.train()
    torch.manual_seed(0)
    out = model(**batch)
    assert out.caption_loss is not None and out.reconstruction_loss is not None
    assert model.config.ett_reconstruction_weight == 0.25
    torch.testing.assert_close(out.loss, out.caption_loss + 0.25 * out.reconstruction_loss, rtol=0, atol=0)
    out.loss.backward()
    tokenizer = model.vision_tokenizer
    assert tokenizer.quantizer.codebook.weight.grad.abs().sum() > 0  # codebook loss
    assert tokenizer.decoders["highres"].in_proj.weight.grad.abs().sum() > 0  # reconstruction
    assert tokenizer.token_selector.score_head[-1].weight.grad.abs().sum() > 0  # keep ratio, straight-through
    # Frozen tokenizer (stage 1), eval mode or alpha = 0: the plain caption loss.
    tokenizer.requires_grad_(False)
    frozen = model(**batch)
    assert frozen.reconstruction_loss is None and frozen.caption_loss is None
    tokenizer.requires_grad_(True)
    model.eval()
    with torch.no_grad():
        assert model(**batch).reconstruction_loss is None
    model.train()
    model.config.ett_reconstruction_weight = 0.0
    assert model(**batch).reconstruction_loss is None


def test_the_caption_loss_alone_tunes_the_tokenizer_end_to_end():
    """ETT's point: with alpha = 0 the caption loss still reaches the codebook rows and, straight through the
    quantizer, the merger and the encoder; the codebook embeddings the LLM reads keep their values."""
    model, processor = ett_model()
    model.config.ett_reconstruction_weight = 0.0
    batch = GVTDataCollator(processor)([caption_rows()[0], caption_rows()[1]])
    model.train()
    out = model(**batch)
    assert out.reconstruction_loss is None
    out.loss.backward()
    tokenizer = model.vision_tokenizer
    assert tokenizer.quantizer.codebook.weight.grad.abs().sum() > 0
    assert tokenizer.token_merger.norm.weight.grad.abs().sum() > 0
    assert tokenizer.encoder.patch_embedding.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        vision = model.get_image_features(batch["pixel_values"]).vision_outputs
        torch.testing.assert_close(
            model.image_inputs.embed_images(model, vision), model.codebook_projector(vision.quantized)
        )


def test_alpha_is_counted_once_against_an_independent_recomputation():
    """`loss == caption_loss + alpha * reconstruction_loss`, each term recomputed outside the model from the same
    tokenizer pass: the plain next-token loss, and the tokenizer objective of `gvt.training.losses`."""
    model, processor = ett_model()
    batch = GVTDataCollator(processor)([caption_rows()[0], caption_rows()[1]])
    model.train()
    torch.manual_seed(0)
    out = model(**batch)
    torch.manual_seed(0)  # the same straight-through keep samples
    vision = model.get_image_features(batch["pixel_values"], selection="sample").vision_outputs
    decoder = model.vision_tokenizer.decoders["highres"]
    codes = straight_through_codes(vision.quantizer_inputs, vision.quantized)
    decoded = decoder(codes, vision.attention_mask).decoded_features
    target = vision.encoder_hidden_states[:, 1:].detach()
    reconstruction = tokenizer_loss(vision, decoded, target, model.config.ett_target_keep_ratio).loss
    labels = out.expanded_labels
    caption = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.reconstruction_loss, reconstruction, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.caption_loss, caption, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.loss, caption + 0.25 * reconstruction, rtol=0, atol=1e-5)


def test_a_batch_without_supervised_labels_gives_a_finite_loss_and_finite_weights(tmp_path):
    model, processor = ett_model()
    batch = GVTDataCollator(processor)([caption_rows()[0], caption_rows()[1]])
    batch["labels"] = torch.full_like(batch["labels"], -100)
    model.train()
    for num_items in (None, torch.tensor(0)):
        out = model(**batch, **({} if num_items is None else {"num_items_in_batch": num_items}))
        assert out.caption_loss.item() == 0.0
        torch.testing.assert_close(out.loss, 0.25 * out.reconstruction_loss)
        assert bool(torch.isfinite(out.loss))
    # Under Trainer (num_items_in_batch = 0 for the whole step), with the tokenizer training: the weights stay finite.
    collator = GVTDataCollator(processor)

    def unsupervised(rows):
        features = collator(rows)
        features["labels"] = torch.full_like(features["labels"], -100)
        return features

    args = training_arguments(tmp_path, max_steps=2, per_device_train_batch_size=2, disable_tqdm=True)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=caption_rows(),
        data_collator=unsupervised,
        callbacks=[ETTCallback(unfreeze_step=0)],
    )
    trainer.train()
    assert all(bool(torch.isfinite(param).all()) for param in model.parameters())
    assert all(entry.get("loss", 0.0) == entry.get("loss", 0.0) for entry in trainer.state.log_history)  # no NaN


REMOTE_ETT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    torch.set_num_threads(1)
    repo = sys.argv[1]
    model = AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True).train()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    inputs = processor(images=image, text="a red circle", return_tensors="pt")
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    grad = model.vision_tokenizer.decoders["highres"].in_proj.weight.grad
    print(json.dumps({
        "module": type(model).__module__, "loss": out.loss.item(), "caption": out.caption_loss.item(),
        "reconstruction": out.reconstruction_loss.item(), "decoder_grad": grad.abs().sum().item(),
    }))
    """
)


def test_a_remote_code_repo_runs_ett_without_gvt(tmp_path):
    """The ETT objective travels with the model code: a `trust_remote_code=True` repo trains jointly without gvt."""
    model, processor = ett_model()
    model.save_pretrained(tmp_path / "repo")
    processor.save_pretrained(tmp_path / "repo")
    result = run_without_gvt(REMOTE_ETT_SCRIPT, tmp_path / "repo", workdir=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules.")
    assert remote["loss"] == pytest.approx(remote["caption"] + 0.25 * remote["reconstruction"], abs=1e-5)
    assert remote["reconstruction"] > 0 and remote["decoder_grad"] > 0


def test_reconstruction_needs_a_fitting_decoder():
    # the reference fixture's decoder width (96) differs from the encoder's (64): no reconstruction target
    model, processor = build_tiny_random("codebook", seed=0, vision_config={"decoder_output_dim": 96})
    batch = GVTDataCollator(processor)([caption_rows()[0]])
    model.train()
    with pytest.raises(ValueError, match=r"decoder_output_dim.*`gvt train ett --alpha 0`"):
        model(**batch)


def test_parameter_groups_and_prepare():
    model, _ = ett_model()
    groups = ett_parameter_groups(model)
    assert WATCHED["projector"] in groups["projector"]
    assert {WATCHED["codebook"], WATCHED["merger"], WATCHED["decoder"]} <= set(groups["tokenizer"])
    assert WATCHED["encoder"] not in groups["tokenizer"]
    assert WATCHED["llm"] in groups["language_model"]
    prepare_ett_model(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for group in groups.values() for name in group}
    assert not any(name.startswith("vision_tokenizer.decoders.lowres") for name in trainable)
    prepare_ett_model(model, train_language_model=False)
    assert not any(p.requires_grad for p in model.language_model.parameters())


def test_a_frozen_selector_keeps_its_weights_and_selects_deterministically(tmp_path):
    """`ETTCallback(train_selector=False)`: the merger, quantizer and decoder tune, the selector stays bit-identical,
    and the tokens the language model reads in training are the ones it reads at inference."""
    model, _ = ett_model()
    groups = ett_parameter_groups(model, train_selector=False)
    assert not any(".token_selector." in name for name in groups["tokenizer"])
    assert WATCHED["codebook"] in groups["tokenizer"]
    snapshots = Snapshots()
    trainer, model = run(tmp_path, ETTCallback(unfreeze_step=0, train_selector=False), snapshots=snapshots)
    first, last = snapshots.steps[0], snapshots.steps[max(snapshots.steps)]
    assert not torch.equal(first["codebook"], last["codebook"]) and not torch.equal(first["llm"], last["llm"])
    selector = model.vision_tokenizer.token_selector
    before = ett_model()[0].vision_tokenizer.token_selector
    for (name, param), original in zip(selector.named_parameters(), before.parameters()):
        assert torch.equal(param, original), name
    model.train()
    batch = GVTDataCollator(ett_model()[1])([caption_rows()[0], caption_rows()[1]])
    with torch.no_grad():
        pixels = batch["pixel_values"]
        expected = model.vision_tokenizer.tokenize(pixels).attention_mask.sum()
    model.vision_tokenizer.token_merger.requires_grad_(True)
    out = model(**batch)
    assert out.reconstruction_loss is not None
    assert int(out.image_attention_mask.sum()) == int(expected)


def test_train_tokenizer_false_is_the_frozen_embeddings_baseline(tmp_path):
    snapshots = Snapshots()
    run(tmp_path, ETTCallback(unfreeze_step=1, train_tokenizer=False), snapshots=snapshots)
    first, last = snapshots.steps[0], snapshots.steps[max(snapshots.steps)]
    for key in ("codebook", "merger", "decoder", "encoder"):
        assert torch.equal(first[key], last[key]), key
    assert not torch.equal(first["projector"], last["projector"]) and not torch.equal(first["llm"], last["llm"])
    assert torch.equal(first["llm"], snapshots.steps[1]["llm"])  # stage 1: the projector alone


def test_stage_schedule_function():
    callback = ETTCallback(unfreeze_step=2, refreeze_step=5)
    assert [callback.stage_at(step) for step in range(7)] == [1, 1, 2, 2, 2, 3, 3]
    by_epoch = ETTCallback(unfreeze_epoch=1)
    assert [by_epoch.stage_at(0, epoch) for epoch in (0.0, 0.5, 0.999, 1.0, 2.5)] == [1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="exactly one"):
        ETTCallback()
    with pytest.raises(ValueError, match="after unfreeze_step"):
        ETTCallback(unfreeze_step=3, refreeze_step=3)
    with pytest.raises(ValueError, match="non-negative"):
        ETTCallback(unfreeze_step=-1)
    state = ETTCallback.from_state(ETTCallback(unfreeze_step=4, stage=2).state())
    assert state.unfreeze_step == 4 and state.stage == 2


def test_stage3_refreezes_the_tokenizer():
    model, _ = ett_model()
    callback = ETTCallback(unfreeze_step=1, refreeze_step=2)
    callback.on_init_end(None, TrainerState(), None, model=model)
    state = TrainerState(max_steps=3)
    callback.on_train_begin(None, state, None, model=model)
    codebook = model.vision_tokenizer.quantizer.codebook.weight
    assert not codebook.requires_grad and model.codebook_projector[0].weight.requires_grad
    state.global_step = 1
    callback.on_step_begin(None, state, None, model=model)
    assert codebook.requires_grad and model.language_model.lm_head.weight.requires_grad
    codebook.grad = torch.ones_like(codebook)
    state.global_step = 2
    callback.on_step_begin(None, state, None, model=model)
    assert not codebook.requires_grad and codebook.grad is None
    assert model.language_model.lm_head.weight.requires_grad
    assert [entry["ett_stage"] for entry in state.log_history] == [1, 2, 3]


def test_unfreeze_step_past_the_end_raises(tmp_path):
    with pytest.raises(ValueError, match="past the end"):
        run(tmp_path, ETTCallback(unfreeze_step=4), max_steps=4)


def test_callback_added_after_the_optimizer_was_built_raises(tmp_path):
    model, processor = ett_model()
    model.vision_tokenizer.requires_grad_(False)
    args = training_arguments(tmp_path, max_steps=2, per_device_train_batch_size=2, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=caption_rows(), data_collator=GVTDataCollator(processor))
    trainer.add_callback(ETTCallback(unfreeze_step=1))
    with pytest.raises(ValueError, match="optimizer does not hold"):
        trainer.train()


def test_unfreeze_schedule_bit_identity_and_exact_resume(tmp_path):
    k = 2
    snapshots = Snapshots()
    trainer, model = run(tmp_path / "full", ETTCallback(unfreeze_step=k), save_steps=k, snapshots=snapshots)
    steps = snapshots.steps
    assert sorted(steps) == [0, 1, 2, 3, 4]
    for key in ("codebook", "merger", "decoder", "llm"):
        for step in range(1, k + 1):  # bit-identical through step k ...
            assert torch.equal(steps[step][key], steps[0][key]), (key, step)
        assert not torch.equal(steps[k + 1][key], steps[k][key]), key  # ... changed after
    assert not torch.equal(steps[1]["projector"], steps[0]["projector"])  # the projector trains from step 1
    for step in range(1, 5):  # never trained: the encoder
        assert torch.equal(steps[step]["encoder"], steps[0]["encoder"])
    norms = steps[4]["codebook"].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # re-normalised after each stage-2 step
    stages = [(entry["ett_stage"], entry["step"]) for entry in trainer.state.log_history if "ett_stage" in entry]
    assert stages == [(1, 0), (2, k)]

    # Interrupted after step k, resumed from its checkpoint: the same final weights.
    checkpoint = tmp_path / "full" / f"checkpoint-{k}"
    assert checkpoint.is_dir()
    resumed_trainer, resumed = run(tmp_path / "full", ETTCallback(unfreeze_step=k), resume=str(checkpoint))
    assert resumed_trainer.state.global_step == 4
    assert resumed.vision_tokenizer.quantizer.codebook.weight.requires_grad  # stage 2 re-applied on resume
    final = dict(model.named_parameters())
    for name, param in resumed.named_parameters():
        assert torch.equal(param, final[name]), name
