import numpy as np
import pytest
import torch

from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.data import catalogue_split, heldout_from_frame
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.errors import IncompatibleAdapter, ModelLoadError
from pricer.evaluator.records import ESTIMATES
from pricer.evaluator.scoring import PriceModel, number_token_ids, parse_price
from pricer.trainer import preset, train


@pytest.fixture(scope="module")
def model(tiny_base):
    return PriceModel(str(tiny_base), device="cpu")


def test_tiny_tokenizer_has_one_token_per_integer(model):
    ids = number_token_ids(model.tokenizer)
    assert ids is not None and len(set(ids)) == 1000
    assert model.tokenizer.decode([ids[437]]) == "437"
    assert model.method == "numbers"


def test_one_pass_argmax_is_greedy_decoding_and_batching_changes_nothing(model, tiny_run, catalogue_heldout):
    name = model.load_adapter(read_adapter(tiny_run / "checkpoint-30"), "c30")
    prompts = catalogue_heldout.prompts[:24]
    batched = model.price(prompts, adapter=name, batch_size=8)
    single = model.price(prompts, adapter=name, batch_size=1)
    np.testing.assert_array_equal(batched.argmax, single.argmax)
    np.testing.assert_allclose(batched.mean, single.mean, rtol=1e-4)
    assert np.all((batched.mean >= 0) & (batched.mean <= 999)) and np.all((batched.p_number > 0) & (batched.p_number <= 1))
    tok = model.tokenizer
    for prompt, price in zip(prompts[:6], batched.argmax[:6], strict=True):
        encoded = tok(prompt, return_tensors="pt")
        with model.lock, model.using(name) as active:
            out = active.generate(**encoded, max_new_tokens=1, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, -1:]) == str(int(price))


def _distribution(model, name: str, prompt: str) -> np.ndarray:
    """The renormalised next-token probabilities over 0..999, computed here directly from the logits."""
    import torch

    encoded = model.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode(), model.lock, model.using(name) as active:
        logits = active(**encoded).logits[0, -1].double()
    numbers = logits[number_token_ids(model.tokenizer)]
    return torch.softmax(numbers, -1).numpy()


def test_every_estimate_and_the_interval_agree_with_the_distribution(model, tiny_run, catalogue_heldout):
    name = model.load_adapter(read_adapter(tiny_run / "checkpoint-30"), "c30-estimates")
    prompts = catalogue_heldout.prompts[:6]
    prices = model.price(prompts, adapter=name, batch_size=3)
    assert all(prices.holds(name) for name in ESTIMATES)
    values = np.arange(1000.0)
    for i, prompt in enumerate(prompts):
        p = _distribution(model, name, prompt)
        cdf = np.cumsum(p)
        hit = [p[(np.abs(g - values) < 40) | (np.abs(g - values) < 0.2 * values)].sum() for g in values]
        expected = {
            "argmax": p.argmax(),
            "mean": p @ values,
            "median": np.searchsorted(cdf, 0.5),
            "log": np.expm1(p @ np.log1p(values)),
            "hit": int(np.argmax(hit)),
            "low": np.searchsorted(cdf, 0.1),
            "high": np.searchsorted(cdf, 0.9),
        }
        for estimate, value in expected.items():
            assert getattr(prices, estimate)[i] == pytest.approx(value, rel=1e-3, abs=1.01), (estimate, i)
        assert prices.low[i] <= prices.median[i] <= prices.high[i]
    model.release_adapter(name)


def test_adapters_swap_without_reloading_the_base(model, tiny_run, catalogue_heldout):
    base_weights = model.model.get_input_embeddings().weight
    prompts = catalogue_heldout.prompts[:16]
    c10 = model.load_adapter(read_adapter(tiny_run / "checkpoint-10"), "c10")
    c30 = model.load_adapter(read_adapter(tiny_run / "checkpoint-30"), "c30")
    first, last = model.price(prompts, adapter=c10), model.price(prompts, adapter=c30)
    base_only = model.price(prompts)
    again = model.price(prompts, adapter=c10)
    assert model.model.get_input_embeddings().weight is base_weights
    np.testing.assert_array_equal(first.argmax, again.argmax)
    assert not np.allclose(first.mean, last.mean) and not np.allclose(first.mean, base_only.mean)
    model.release_adapter(c10)
    model.release_adapter(c30)
    assert model.adapters == []  # released: memory does not grow with the checkpoints seen
    np.testing.assert_allclose(model.price(prompts).mean, base_only.mean, rtol=1e-5)
    with pytest.raises(KeyError, match="not loaded"):
        model.price(prompts, adapter=c10)


def test_merged_scoring_gives_the_unmerged_prices_and_never_writes_the_base(model, tiny_run, catalogue_heldout):
    import torch
    from peft.tuners.lora import LoraLayer

    prompts = catalogue_heldout.prompts[:24]
    base_only = model.price(prompts)
    weights = {k: v.detach().clone() for k, v in model.model.state_dict().items() if "lora_" not in k}
    c10 = model.load_adapter(read_adapter(tiny_run / "checkpoint-10"), "c10-merge")
    c30 = model.load_adapter(read_adapter(tiny_run / "checkpoint-30"), "c30-merge")
    assert model.mergeable(c10) and model.mergeable(c30)
    unmerged = {name: model.price(prompts, adapter=name, batch_size=8) for name in (c10, c30)}
    merged = model.price(prompts, adapter=c30, batch_size=8, merged=True)
    with model.lock, model.using(c30, merged=True) as active:  # the forward pass meets no LoRA layer
        assert active is model.model and not any(isinstance(m, LoraLayer) for m in active.modules())
    # a prediction under another adapter between merged batches is answered by that adapter, unmerged
    interleaved = model.price(prompts, adapter=c10, batch_size=8)
    again = model.price(prompts, adapter=c30, batch_size=8, merged=True)
    for estimate in ("argmax", "median", "low", "high"):
        np.testing.assert_array_equal(getattr(merged, estimate), getattr(unmerged[c30], estimate))
    np.testing.assert_allclose(merged.mean, unmerged[c30].mean, rtol=1e-4)
    np.testing.assert_allclose(merged.p_number, unmerged[c30].p_number, rtol=1e-4)
    np.testing.assert_array_equal(interleaved.mean, unmerged[c10].mean)
    np.testing.assert_array_equal(again.mean, merged.mean)
    assert not np.allclose(merged.mean, unmerged[c10].mean)
    model.release_adapter(c30)
    model.release_adapter(c10)
    after = {k: v for k, v in model.model.state_dict().items() if "lora_" not in k}
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)  # bit for bit
    np.testing.assert_array_equal(model.price(prompts).mean, base_only.mean)


def test_pricing_never_uses_cudnn_attention_and_leaves_the_setting_as_it_was(model, catalogue_heldout):
    # cuDNN's attention builds a plan per new shape (hundreds of ms); pricing's batch shapes seldom repeat
    seen = []
    hook = model.model.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, args: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    try:
        assert torch.backends.cuda.cudnn_sdp_enabled()
        model.price(catalogue_heldout.prompts[:4], batch_size=2)
    finally:
        hook.remove()
    assert seen == [False, False]
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_adapter_of_another_base_is_refused_and_the_model_keeps_working(model, tiny_run, tmp_path, catalogue_heldout):
    other_base = make_tiny_base(tmp_path / "wider", hidden=64, pretrain_steps=0)
    items = heldout_from_frame(catalogue_split()[0].iloc[:16], name="t")
    other_run = train(other_base, items, tmp_path / "other-run", preset("tiny", max_steps=2, save_steps=2)).output
    c20 = model.load_adapter(read_adapter(tiny_run / "checkpoint-20"), "c20")
    before = model.price(catalogue_heldout.prompts[:8], adapter=c20)
    with pytest.raises(IncompatibleAdapter, match="fits no module"):
        model.load_adapter(read_adapter(other_run / "checkpoint-2"), "other")
    assert model.adapters == ["c20"]
    np.testing.assert_array_equal(model.price(catalogue_heldout.prompts[:8], adapter=c20).argmax, before.argmax)
    model.release_adapter(c20)


def test_tokenizer_without_number_tokens_falls_back_to_generation(tmp_path, catalogue_heldout):
    split = PriceModel(str(make_tiny_base(tmp_path / "split-numbers", number_tokens=False, pretrain_steps=0)), device="cpu")
    assert split.method == "generate" and split.number_ids is None
    prices = split.price(catalogue_heldout.prompts[:4], batch_size=2)
    assert prices.argmax.shape == (4,) and np.all(prices.argmax >= 0) and np.all(np.isnan(prices.p_number))


def test_parse_price_reads_the_first_number():
    assert parse_price("1,299.99 dollars") == 1299.99
    assert parse_price(" 42.00") == 42.0
    assert parse_price("no idea") == 0.0


def test_unknown_base_and_4bit_on_cpu_are_clear_errors(tmp_path, tiny_base):
    with pytest.raises(ModelLoadError, match="cannot load base model"):
        PriceModel(str(tmp_path / "no-model"), device="cpu")
    with pytest.raises(ModelLoadError, match="needs a CUDA device"):
        PriceModel(str(tiny_base), device="cpu", load_in_4bit=True)
