"""Fine-tune a causal LM into a pricer with LoRA (QLoRA on CUDA), writing every checkpoint as a revision.

The transformers `Trainer` does the training; this module checks everything that can be
wrong before any work (data, base model, output folder), builds the model and the
completion-only dataset, and hands each saved checkpoint to the publisher when pushing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from pricer.evaluator.checkpoints.sources import LocalRun
from pricer.evaluator.data import HeldOutSet
from pricer.evaluator.errors import ModelLoadError, RevisionNotFound, RunFolderInUse
from pricer.trainer.config import TrainConfig
from pricer.trainer.dataset import CompletionOnly, pad_batch

log = logging.getLogger(__name__)
RUN_FILE = "pricer-run.json"  # marks an output folder as one run: its base and training data


@dataclass(frozen=True)
class TrainResult:
    output: Path
    steps: int
    checkpoints: list[int]
    pushed: list  # trainer.publish.Pushed, in order


def check_output(output: Path, *, base: str, data: HeldOutSet, resume: bool) -> str | None:
    """The checkpoint to resume from (None: start afresh), or an error when the folder holds another run."""
    marker = output / RUN_FILE
    expected = {"base": base, "data_fingerprint": data.fingerprint}
    if output.exists() and not output.is_dir():
        raise RunFolderInUse(f"{output} is a file, not a run folder")
    if not output.exists() or not any(output.iterdir()):
        return None
    if not marker.is_file():
        raise RunFolderInUse(f"{output} is not empty and holds no pricer run; choose another --output")
    found = json.loads(marker.read_text())
    if {k: found.get(k) for k in expected} != expected:
        raise RunFolderInUse(
            f"{output} holds another run (base {found.get('base')!r}, other training data); choose another --output"
        )
    checkpoints = _complete_checkpoints(output)
    if checkpoints and not resume:
        raise RunFolderInUse(f"{output} already holds checkpoints of this run; pass --resume to continue it")
    return str(checkpoints[-1]) if checkpoints and resume else None


def _complete_checkpoints(output: Path) -> list[Path]:
    """The run's checkpoints that a resume can start from, oldest first: a save cut off by a crash (no adapter,
    no trainer state) is skipped with a warning."""
    try:
        scan = LocalRun(output).scan()
    except RevisionNotFound:  # no checkpoint yet
        return []
    for revision, reason in scan.skipped:
        log.warning("skipping %s: %s", revision.revision, reason)
    complete = []
    for revision in scan.revisions:
        if (output / revision.revision / "trainer_state.json").is_file():
            complete.append(output / revision.revision)
        else:
            log.warning("skipping %s: no trainer_state.json (the save was cut off)", revision.revision)
    return complete


class _LossBar(TrainerCallback):
    """One progress bar with the latest loss and learning rate, instead of a printed line per log."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", desc="training")

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}")

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def _logging_steps(config: TrainConfig) -> int:
    # a divisor of save_steps, so every checkpoint's trainer_state.json ends with its loss and learning rate
    return max(d for d in range(1, min(config.logging_steps, config.save_steps) + 1) if config.save_steps % d == 0)


def load_for_training(base: str, config: TrainConfig, *, token: str | None = None):
    """(tokenizer, PEFT model) for `base`: nf4-quantised with a LoRA on CUDA (QLoRA), a plain LoRA elsewhere."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    cuda = torch.cuda.is_available()
    quantize = config.quantization == "nf4" or (config.quantization == "auto" and cuda)
    if quantize and not cuda:
        raise ModelLoadError("4-bit (nf4) QLoRA needs a CUDA device; use quantization 'none' on CPU")
    quantization = (
        BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
        )
        if quantize
        else None
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False, token=token)
        model = AutoModelForCausalLM.from_pretrained(
            base,
            dtype=torch.bfloat16 if cuda else torch.float32,
            quantization_config=quantization,
            device_map={"": 0} if quantize else None,
            trust_remote_code=False,
            use_safetensors=True,
            token=token,
        )
    except Exception as exc:  # transformers raises OSError, ValueError... for a bad base
        raise ModelLoadError(f"cannot load base model {base!r}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantize:
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    return tokenizer, get_peft_model(model, lora)


def train(
    base: str | Path,
    data: HeldOutSet,
    output: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    push_to: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    callbacks: Sequence = (),
    progress: bool = False,
) -> TrainResult:
    """Fine-tune `base` on `data`, writing `checkpoint-N/` to `output` every `config.save_steps` steps
    (and, with `push_to`, each as a commit of that Hub repo). Everything is checked before training starts."""
    from transformers import AutoConfig, PrinterCallback, Trainer, TrainingArguments

    base, output = str(base), Path(output).expanduser().resolve()
    resume_from = check_output(output, base=base, data=data, resume=resume)
    try:
        AutoConfig.from_pretrained(base, trust_remote_code=False, token=token)
    except Exception as exc:
        raise ModelLoadError(f"unknown base model {base!r}: {exc}") from exc
    publisher = None
    if push_to:
        from pricer.trainer.publish import HubPublisher, PublishCallback

        publisher = HubPublisher(push_to, token=token, endpoint=endpoint)
        callbacks = [*callbacks, PublishCallback(publisher)]

    tokenizer, model = load_for_training(base, config, token=token)
    output.mkdir(parents=True, exist_ok=True)
    (output / RUN_FILE).write_text(json.dumps({"base": base, "data_fingerprint": data.fingerprint, "config": config.to_dict()}))
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(output),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        save_steps=config.save_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optimizer if cuda else "adamw_torch",
        bf16=cuda,
        logging_steps=_logging_steps(config),
        report_to=[],
        use_cpu=not cuda,
        seed=config.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=CompletionOnly(tokenizer, data, max_length=config.max_length),
        data_collator=pad_batch(tokenizer.pad_token_id),
        callbacks=[*callbacks, *([_LossBar()] if progress else [])],
    )
    trainer.remove_callback(PrinterCallback)  # logs go to trainer_state.json and the bar, not one print each
    if resume_from:
        log.info("resuming from %s", resume_from)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        pushed = publisher.close() if publisher else []
    steps = [r.step for r in LocalRun(output).revisions()] if any(output.glob("checkpoint-*")) else []
    return TrainResult(output, trainer.state.global_step, steps, pushed)
