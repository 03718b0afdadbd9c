"""Tests for the synthetic product catalogue (pricer.evaluator.embedded.catalogue)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pricer.evaluator.embedded.catalogue import MAX_PRICE, MIN_PRICE, catalogue_frame, generate_catalogue

KEYS = {"title", "details", "category", "price"}


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return generate_catalogue(2000, seed=0)


def test_schema(items: list[dict]) -> None:
    assert len(items) == 2000
    for it in items:
        assert set(it) == KEYS
        assert isinstance(it["title"], str) and isinstance(it["details"], str)
        assert isinstance(it["category"], str) and isinstance(it["price"], float)
        assert it["price"] == round(it["price"], 2)


def test_deterministic_same_seed() -> None:
    assert generate_catalogue(300, seed=7) == generate_catalogue(300, seed=7)
    assert generate_catalogue(50, seed=7) == generate_catalogue(300, seed=7)[:50]


def test_different_seed_differs() -> None:
    a, b = generate_catalogue(300, seed=0), generate_catalogue(300, seed=1)
    assert a != b
    assert sum(x["title"] == y["title"] for x, y in zip(a, b, strict=False)) < 5


def test_default_arguments() -> None:
    assert generate_catalogue()[:5] == generate_catalogue(2000, seed=0)[:5]
    assert generate_catalogue(0) == []


def test_prices_in_range_and_skewed(items: list[dict]) -> None:
    prices = np.array([it["price"] for it in items])
    assert prices.min() >= MIN_PRICE and prices.max() <= MAX_PRICE
    assert 40 <= np.median(prices) <= 150
    assert prices.mean() > np.median(prices)  # right skew
    assert np.quantile(prices, 0.02) < 20 and np.quantile(prices, 0.98) > 400


def test_categories(items: list[dict]) -> None:
    counts: dict[str, int] = {}
    for it in items:
        counts[it["category"]] = counts.get(it["category"], 0) + 1
    assert len(counts) >= 6
    assert min(counts.values()) > 100


def test_text_lengths(items: list[dict]) -> None:
    lengths = [len(it["title"]) + len(it["details"]) for it in items]
    assert min(lengths) >= 150 and max(lengths) <= 550
    assert 200 <= float(np.mean(lengths)) <= 500


def test_text_varies(items: list[dict]) -> None:
    titles = {it["title"] for it in items}
    assert len(titles) > 0.98 * len(items)


def test_frame_matches_list() -> None:
    df = catalogue_frame(100, seed=3)
    assert list(df.columns) == ["title", "details", "category", "price"]
    assert df.to_dict("records") == generate_catalogue(100, seed=3)


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _design(docs: list[set[str]], vocab: dict[str, int]) -> np.ndarray:
    x = np.zeros((len(docs), len(vocab)))
    for i, doc in enumerate(docs):
        for tok in doc:
            j = vocab.get(tok)
            if j is not None:
                x[i, j] = 1.0
    return x


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def bow_ridge_r2(items: list[dict], n_train: int = 1500, lam: float = 1.0) -> tuple[float, float]:
    """Fit bag-of-words ridge regression on log price; return (model R², constant R²) on held-out items."""
    docs = [_tokens(it["title"] + " " + it["details"]) for it in items]
    y = np.log(np.array([it["price"] for it in items]))
    counts: dict[str, int] = {}
    for doc in docs[:n_train]:
        for tok in doc:
            counts[tok] = counts.get(tok, 0) + 1
    vocab = {tok: j for j, tok in enumerate(sorted(t for t, c in counts.items() if c >= 2))}
    x = _design(docs, vocab)
    x_tr, y_tr, x_te, y_te = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    x_mean, y_mean = x_tr.mean(axis=0), y_tr.mean()
    xc = x_tr - x_mean
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y_tr - y_mean))
    pred = (x_te - x_mean) @ w + y_mean
    const = np.full_like(y_te, y_mean)
    return _r2(y_te, pred), _r2(y_te, const)


def test_price_learnable_from_text(items: list[dict]) -> None:
    r2_model, r2_const = bow_ridge_r2(items)
    assert r2_model > 0.5
    assert r2_const < 0.05
    assert r2_model - r2_const > 0.4


def test_model_names_carry_no_signal(items: list[dict]) -> None:
    """Stripping model names must not hurt: the price depends only on structured text."""
    stripped = []
    for it in items:
        model = re.search(r"Model: ([^;]+);", it["details"]).group(1)
        stripped.append({**it, "title": it["title"].replace(model, ""), "details": it["details"].replace(model, "")})
    full, _ = bow_ridge_r2(items)
    without, _ = bow_ridge_r2(stripped)
    assert without >= full - 0.02
