"""Training utilities of gvt: the LaVIT detokenizer's diffusion training loop."""

from .decoder_training import DecoderDenoiser, DecoderTrainingOutput, train_decoder

__all__ = ["train_decoder", "DecoderDenoiser", "DecoderTrainingOutput"]
