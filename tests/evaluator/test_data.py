import json

import numpy as np
import pandas as pd
import pytest

from pricer.evaluator.data import PRICE_PREFIX, build_prompt, load_heldout, training_text
from pricer.evaluator.errors import InvalidDataset
from tests.conftest import REAL_DATA


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"title": ["Stand mixer", "Drill"], "details": ["10 speeds", "18 V"], "price": [199.99, 49.5]})


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ".json"])
def test_every_format_reads_to_the_same_items(tmp_path, suffix):
    path = tmp_path / f"items{suffix}"
    frame = _frame()
    {
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
        ".json": lambda: frame.to_json(path, orient="records"),
    }[suffix]()
    items = load_heldout(path)
    assert items.prompts[0] == build_prompt("Stand mixer\n10 speeds")
    assert items.prompts[0].endswith(PRICE_PREFIX)
    np.testing.assert_allclose(items.prices, [199.99, 49.5])
    assert items.fingerprint == load_heldout(_write(tmp_path / "again.jsonl", frame.to_dict("records"))).fingerprint


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_real_items_keep_their_prompt():
    items = load_heldout(REAL_DATA / "appliances_lite_2000.jsonl")
    first = json.loads((REAL_DATA / "appliances_lite_2000.jsonl").open().readline())
    assert len(items) == 2000 and items.prompts[0] == first["text"] and items.prices[0] == first["price"]


def test_description_column_and_training_text_answer_is_stripped(tmp_path):
    prompt = build_prompt("A lamp")
    items = load_heldout(_write(tmp_path / "a.jsonl", [{"description": "A lamp", "price": 12.5}]))
    assert items.prompts == [prompt]
    trained = load_heldout(_write(tmp_path / "b.jsonl", [{"text": training_text(prompt, 12.5), "price": 12.5}]))
    assert trained.prompts == [prompt]
    assert training_text(prompt, 12.5) == prompt + "12.00"  # Python rounds halves to even, as the course


def test_default_is_the_generated_catalogue():
    items = load_heldout()
    assert items.name == "catalogue-heldout" and len(items) == 400
    assert items.fingerprint == load_heldout().fingerprint


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"title": "x", "cost": 3}], "no 'price' column"),
        ([{"title": "x", "price": "cheap"}], "not a number in row(s) 0"),
        ([{"title": "x", "price": 3}, {"title": "y", "price": None}], "missing or not a number in row(s) 1"),
        ([{"title": "x", "price": 0}], "must be positive"),
        ([{"title": "x", "price": -2}], "must be positive"),
        ([{"name": "x", "price": 2}], "needs a 'text', 'description' or 'title'"),
        ([{"text": "no suffix", "price": 2}], "must end with 'Price is $'"),
        ([{"description": "  ", "price": 2}], "empty description"),
    ],
)
def test_bad_rows_are_refused_with_a_clear_message(tmp_path, records, message):
    with pytest.raises(InvalidDataset, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        load_heldout(_write(tmp_path / "bad.jsonl", records))


def test_broken_files_are_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"title": "x", "price": 1}\n{"title": \n')
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "items.xml").write_text("<x/>")
    with pytest.raises(InvalidDataset, match="no rows"):
        load_heldout(tmp_path / "empty.jsonl")
    with pytest.raises(InvalidDataset, match="line 2: not valid JSON"):
        load_heldout(tmp_path / "broken.jsonl")
    with pytest.raises(InvalidDataset, match="cannot read as parquet"):
        load_heldout(tmp_path / "broken.parquet")
    with pytest.raises(InvalidDataset, match="unknown data format"):
        load_heldout(tmp_path / "items.xml")
    with pytest.raises(InvalidDataset, match="no such data file"):
        load_heldout(tmp_path / "missing.csv")
