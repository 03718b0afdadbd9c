"""`pricer train | data`: fine-tune a LoRA (QLoRA on CUDA) that writes a checkpoint every N steps; the embedded
catalogue's items as files to train and evaluate on."""

from __future__ import annotations

import argparse
from pathlib import Path

from pricer.evaluator.cli.common import print_json, progress, settings_from
from pricer.evaluator.errors import ModelLoadError


def cmd_train(args: argparse.Namespace) -> None:
    from pricer.evaluator.data import CATALOGUE, catalogue_split, heldout_from_frame, load_heldout
    from pricer.trainer import PricerCallback, preset, train

    settings = settings_from(args)
    config = preset(
        args.preset,
        epochs=args.epochs,
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lora_r=args.lora_r,
    )
    if args.data and args.data != CATALOGUE:
        data = load_heldout(args.data, token=settings.token)
    else:  # the catalogue's training part (its held-out part is what evaluations use)
        data = heldout_from_frame(catalogue_split()[0], name="catalogue-train")
    base = args.base
    if base is None:
        if args.preset != "tiny":
            raise ModelLoadError("give --base (a model id or folder); only --preset tiny has a default base")
        from pricer.evaluator.embedded.tiny import make_tiny_base

        base = str(make_tiny_base(settings.home / "tiny-llama"))
    # a pushed run is named by its Hub repo and each checkpoint by the exact commit its push made
    notify = {"repo": args.push_to, "hub_token": settings.token, "hub_endpoint": settings.hf_endpoint} if args.push_to else {}
    callbacks = [PricerCallback(args.notify, api_token=args.notify_token, **notify)] if args.notify else []
    result = train(
        base,
        data,
        args.output,
        config,
        resume=args.resume,
        push_to=args.push_to,
        token=settings.token,
        endpoint=settings.hf_endpoint,
        callbacks=callbacks,
        progress=progress(args),
    )
    summary = {
        "output": str(result.output),
        "steps": result.steps,
        "checkpoints": result.checkpoints,
        "pushed": [{"step": p.step, "commit": p.commit, "message": p.message} for p in result.pushed],
    }
    if args.json:
        print_json(summary)
        return
    print(f"trained {result.steps} steps on {len(data)} items; checkpoints at steps {result.checkpoints} in {result.output}")
    for pushed in result.pushed:
        print(f"  pushed step {pushed.step} to {args.push_to}@{pushed.commit[:10]}")
    print(f"next: pricer evaluate {args.push_to or result.output} --all")


def cmd_data(args: argparse.Namespace) -> None:
    from pricer.evaluator.data import catalogue_split
    from pricer.evaluator.errors import InvalidDataset

    folder = Path(args.output).expanduser()
    files = {"train": folder / "train.jsonl", "heldout": folder / "heldout.jsonl"}
    existing = [str(path) for path in files.values() if path.exists()]
    if existing and not args.force:
        raise InvalidDataset(f"{', '.join(existing)} already exist(s); --force overwrites")
    written = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for (part, path), frame in zip(files.items(), catalogue_split(), strict=True):
            frame.to_json(path, orient="records", lines=True, force_ascii=False)
            written[part] = {"path": str(path), "items": len(frame)}
    except OSError as exc:  # a folder that cannot be made or written (read-only, a file in the way, a full disk)
        raise InvalidDataset(f"{args.output}: cannot write the data files ({exc.strerror or exc})") from exc
    if args.json:
        print_json(written)
        return
    for words, what in zip(("training", "held-out"), written.values(), strict=True):
        print(f"{what['path']}: {what['items']} {words} items (title, details, category, price)")
    print(f"next: pricer train --preset tiny --data {files['train']} --output ./runs/my-run")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("data", help="write the embedded catalogue's train and held-out items to JSONL files")
    p.add_argument("--output", default=".", help="the folder for train.jsonl and heldout.jsonl (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite files already there")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(run=cmd_data)

    p = commands.add_parser("train", help="fine-tune a LoRA (QLoRA on CUDA) that writes a checkpoint every N steps")
    p.add_argument("--base", help="base model id or folder (default with --preset tiny: the embedded tiny Llama)")
    p.add_argument(
        "--data", help="training items: JSONL / CSV / Parquet, hf://datasets/<id>[@rev]/<file>, or catalogue (the default)"
    )
    p.add_argument("--output", required=True, help="run folder: checkpoint-N/ land here")
    p.add_argument("--preset", choices=("course-qlora", "tiny"), default="course-qlora", help="settings to start from")
    p.add_argument("--epochs", type=float, help="passes over the items")
    p.add_argument("--max-steps", type=int, help="stop after N steps (overrides --epochs)")
    p.add_argument("--save-steps", type=int, help="a checkpoint every N steps")
    p.add_argument("--batch-size", type=int, help="items per optimizer step (default: the preset's)")
    p.add_argument("--learning-rate", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--lora-r", type=int, help="LoRA rank")
    p.add_argument("--push-to", help="Hub repo id: every checkpoint becomes a commit of it, in order")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    p.add_argument(
        "--notify", metavar="URL",
        help="a pricer service to POST /evaluate each checkpoint to (with --push-to: its commit of that Hub repo); "
        "what it does not take waits in the run folder's _pricer-outbox.jsonl",
    )
    p.add_argument("--notify-token", help="that service's API token")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(run=cmd_train)
