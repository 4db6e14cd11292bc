"""FSDP2 training with `transformers.Trainer` on any device, CPU processes (gloo) included.

`TrainingArguments(fsdp=True, fsdp_config=...)` builds accelerate's `FullyShardedDataParallelPlugin`, but accelerate
only switches to FSDP on accelerator devices (on CPU it silently falls back to DDP). torch's `fully_shard` (FSDP2)
itself runs on CPU over gloo, so [`FSDPTrainer`] hands the same plugin to accelerate on CPU too; everything else
(sharding by `_no_split_modules`, full-state-dict checkpoints, resuming) is accelerate's and the Trainer's own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.distributed.fsdp import FSDPModule
from transformers import Trainer

# `accelerate launch --config_file ACCELERATE_FSDP_CONFIG -m gvt.cli train llm ...`: 2 processes, FSDP2 (see the file)
ACCELERATE_FSDP_CONFIG = Path(__file__).with_name("accelerate_fsdp.yaml")

# FSDP2, one shard group per transformer layer (the model's `_no_split_modules`), and checkpoints holding the full
# state dict (the final model loads with `from_pretrained`). Keys as in
# `TrainingArguments.fsdp_config`; a cluster run at 7B switches `state_dict_type` to "SHARDED_STATE_DICT".
DEFAULT_FSDP_CONFIG: dict[str, Any] = {
    "version": 2,
    "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "reshard_after_forward": True,
    "state_dict_type": "FULL_STATE_DICT",
}


class FSDPTrainer(Trainer):
    """`Trainer` that honours `args.fsdp` on CPU processes as well (see the module docstring)."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
        from accelerate.utils.environment import parse_flag_from_env

        state = self.accelerator.state
        if self.is_fsdp_enabled or state.distributed_type != DistributedType.MULTI_CPU:
            return
        if self.args.fsdp_plugin_args is not None:
            plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        elif parse_flag_from_env("ACCELERATE_USE_FSDP"):  # `accelerate launch` with an FSDP config
            plugin = FullyShardedDataParallelPlugin()  # reads the launcher's FSDP_* variables
        else:
            return
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.is_fsdp_enabled = True

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # `fully_shard` swaps the model's class for `FSDP<Name>`, defined in torch's module: `save_pretrained` would
        # copy that module's files as the remote code of the checkpoint. Point the class back at the model's module.
        model_class = type(self.model)
        if isinstance(self.model, FSDPModule):
            original = next(c for c in model_class.__mro__ if not issubclass(c, FSDPModule))
            model_class.__module__ = original.__module__
        super()._save(output_dir, state_dict=state_dict)


__all__ = ["FSDPTrainer", "DEFAULT_FSDP_CONFIG", "ACCELERATE_FSDP_CONFIG"]
