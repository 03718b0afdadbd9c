"""A tiny real Llama for tests and the embedded default: no download, no GPU.

The tokenizer is a byte-level BPE trained locally with Llama 3's pre-tokenizer pattern,
so that, as in Llama 3, every integer 0..999 is one token and longer numbers split in
groups of three digits. The model is a `LlamaForCausalLM` built from a config.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pricer.evaluator.data import build_prompt, catalogue_split, training_text
from pricer.evaluator.scoring import number_token_ids

TINY_VERSION = 2  # bump when the recipe changes, so cached bases are rebuilt

# Llama 3's split pattern: words, numbers of at most three digits, punctuation runs, spaces
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"
NUMBERS = [str(i) for i in range(1000)]


def build_tokenizer(corpus: Iterable[str], *, vocab_size: int = 2048, number_tokens: bool = True) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus`, then make sure each integer 0..999 is a single token.

    `number_tokens=False` leaves numbers to BPE, as in tokenizers that split them (tests the fallback).
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        show_progress=False,  # its bars name no step of pricer's; the caller says what is being built
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if number_tokens:
        tokenizer.add_tokens(NUMBERS)  # digits are printable bytes, so each number's token is the number itself
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def build_model(
    tokenizer: PreTrainedTokenizerFast, *, hidden: int = 128, layers: int = 2, seed: int = 0, number_sense: bool = True
) -> LlamaForCausalLM:
    """A randomly initialised Llama with the tokenizer's vocabulary.

    With `number_sense`, the embeddings of the tokens 0..999 vary smoothly with log(value)
    (`number_embeddings`): the tied output head then ranks nearby prices alike, which a tiny
    model does not learn from a short run on its own.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    ids = number_token_ids(tokenizer)
    if number_sense and ids:
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight[ids] = number_embeddings(weight[ids])
    return model


def number_embeddings(noise: torch.Tensor, *, centres: int = 24, share: float = 0.9) -> torch.Tensor:
    """Embeddings (norm about 1) of the tokens 0..999 (row n for the number n) that vary smoothly with log(1 + n).

    Gaussian bumps over log(1 + n) mix `centres` random directions, so nearby numbers start out
    alike; `share` of each row is that smooth part and the rest is `noise` (the random init).
    """
    generator = torch.Generator().manual_seed(1234)
    x = torch.log1p(torch.arange(noise.shape[0], dtype=torch.float32))
    mu = torch.linspace(0, float(x[-1]), centres)
    phi = torch.exp(-0.5 * ((x[:, None] - mu[None]) / float(mu[1] - mu[0])) ** 2)
    phi = phi / phi.norm(dim=1, keepdim=True)
    directions = torch.randn(centres, noise.shape[1], generator=generator) / noise.shape[1] ** 0.5
    noise = noise / noise.norm(dim=1, keepdim=True)
    return share * phi @ directions + (1 - share**2) ** 0.5 * noise


def default_corpus(extra: Iterable[str] = (), *, seed: int = 0) -> list[str]:
    """Pretraining text: the catalogue's training items with their prices shuffled among them, plus `extra`.

    Shuffled prices teach the base the prompt format and what prices look like, not which
    item costs what: learning that is left to the LoRA fine-tune, as with a real base model.
    """
    train, _ = catalogue_split()
    prices = train.price.sample(frac=1.0, random_state=seed).to_numpy()
    texts = [training_text(build_prompt(f"{t}\n{d}"), p) for t, d, p in zip(train.title, train.details, prices, strict=False)]
    return texts + list(extra)


def pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    *,
    steps: int = 300,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
    freeze_numbers: bool = True,
    progress: bool = False,
) -> None:
    """A short full-model language-modelling run, so the tiny base is not pure noise.

    `freeze_numbers` keeps the number tokens' embeddings (and so the tied head's rows) as
    `build_model` made them: shuffled prices would otherwise wash out their order.
    """
    rng = random.Random(seed)
    hook = None
    ids = number_token_ids(tokenizer) if freeze_numbers else None
    if ids:
        keep = torch.ones(len(tokenizer), 1).index_fill_(0, torch.tensor(ids), 0.0)
        hook = model.get_input_embeddings().weight.register_hook(lambda grad: grad * keep)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for _ in tqdm(range(steps), desc="pretraining the tiny base", unit="step", disable=not progress):
        batch = tokenizer([t + tokenizer.eos_token for t in rng.sample(texts, batch_size)], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if hook is not None:
        hook.remove()
    model.eval()


def make_tiny_base(
    path: str | Path,
    *,
    hidden: int = 128,
    layers: int = 2,
    extra_corpus: Iterable[str] = (),
    number_tokens: bool = True,
    pretrain_steps: int = 300,
    progress: bool = False,
) -> Path:
    """Write a tiny base model (model + tokenizer) to `path`, once; return the path."""
    path = Path(path)
    marker = path / "pricer-tiny.json"
    recipe = json.dumps(
        {
            "version": TINY_VERSION,
            "hidden": hidden,
            "layers": layers,
            "number_tokens": number_tokens,
            "pretrain_steps": pretrain_steps,
        }
    )
    if marker.is_file() and marker.read_text() == recipe:
        return path
    corpus = default_corpus(extra_corpus)
    tokenizer = build_tokenizer(corpus, number_tokens=number_tokens)
    model = build_model(tokenizer, hidden=hidden, layers=layers)
    pretrain(model, tokenizer, corpus, steps=pretrain_steps, progress=progress)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)  # safetensors
    marker.write_text(recipe)  # last: a half-written base is rebuilt
    return path
