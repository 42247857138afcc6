"""Several GPUs: the accelerate configs in configs/accelerate/, the engine's contract with DeepSpeed, vLLM's parallel options.

No GPU here, so what runs is what can run on CPU: accelerate reads each shipped config through
its own launcher code and builds the FSDP plugin from it; the training loop tells accelerate which
micro-batch closes an optimizer step (DeepSpeed's engine steps inside `backward` on that flag);
`-B tensor_parallel_size=...` reaches `vllm.LLM` (a stand-in module records the call). Two CPU
processes training data-parallel under torchrun are tested in test_train_step.py and
test_run_lock.py.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"


def launch_args(config: Path):
    """The arguments `accelerate launch --config_file CONFIG -m cotkit train` runs with, as accelerate resolves them."""
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "cotkit", "train"])
    _validate_launch_command(args)
    return args


def test_the_fsdp_config_builds_accelerates_fsdp2_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp import StateDictType

    args = launch_args(CONFIGS / "fsdp.yaml")
    assert args.use_fsdp and not args.use_deepspeed and args.num_processes == 2
    env = prepare_multi_gpu_env(args)  # what each launched process finds in its environment
    for name, value in env.items():
        if name.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(name, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    # The engine saves the checkpoint from `accelerator.get_state_dict`: it must be the full weights.
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"


def test_the_deepspeed_config_is_zero2_with_cotkits_clipping_and_no_accumulation_of_its_own():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from cotkit.harness.train import SFTConfig

    config = load_config_from_file(str(CONFIGS / "deepspeed-zero2.yaml"))
    assert config.distributed_type == DistributedType.DEEPSPEED
    args = launch_args(CONFIGS / "deepspeed-zero2.yaml")
    assert args.use_deepspeed and args.zero_stage == 2
    assert args.gradient_accumulation_steps == 1  # cotkit accumulates --sft.grad-accum itself
    assert args.gradient_clipping == SFTConfig().max_grad_norm  # DeepSpeed clips in its step, for cotkit


@pytest.mark.usefixtures("one_thread")
def test_only_the_micro_batch_that_closes_an_optimizer_step_syncs(tiny_model, tmp_path):
    from cotkit.harness.train import SFTConfig, TrainExample, WeightedSFT, train

    class Recording(WeightedSFT):
        def setup(self, accelerator, net):
            super().setup(accelerator, net)
            self.accelerator, self.flags = accelerator, []

        def loss(self, net, batch, normalizer):
            self.flags.append(self.accelerator.sync_gradients)
            return super().loss(net, batch, normalizer)

    items = [TrainExample(f"Q: What is {a} plus 1?\nA:", f" {a + 1}.") for a in range(6)]
    objective = Recording()
    train(str(tiny_model), items, SFTConfig(batch_size=1, grad_accum=3), 2, tmp_path / "out", seed=0, objective=objective)
    assert objective.flags == [False, False, True] * 2


@pytest.mark.usefixtures("host")
def test_vllm_parallel_options_given_with_B_reach_vllm_llm(tiny_model, monkeypatch):
    """`-B tensor_parallel_size=2 -B pipeline_parallel_size=2`: typed and handed to `vllm.LLM` (vLLM need not be installed)."""
    from cotkit.models import load_backend

    calls = []

    class LLM:
        def __init__(self, **kwargs):
            calls.append(kwargs)

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLM
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_sleep_mode_available=lambda: False)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    load_backend("vllm", model=str(tiny_model), tensor_parallel_size="2", pipeline_parallel_size="2", distributed_executor_backend="mp")
    [kwargs] = calls
    assert (kwargs["tensor_parallel_size"], kwargs["pipeline_parallel_size"]) == (2, 2)
    assert kwargs["distributed_executor_backend"] == "mp"
