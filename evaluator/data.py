"""Held-out data: read a JSONL / CSV / Parquet file into prompts and true prices.

A row gives its prompt either whole (`text`, ending with "Price is $") or as a
description (`description`, or `title` + `details`) from which the course's prompt is
built. Everything is checked before any model work starts, so a broken file costs
nothing but a clear message.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pricer.evaluator.errors import InvalidDataset, InvalidPredictionInput

QUESTION = "How much does this cost to the nearest dollar?"
PRICE_PREFIX = "Price is $"
READERS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_TEST_SHARE = 0.5  # of held-out items, when the data has no `split` column
SPLIT_NAMES = ("validation", "val", "valid", "dev", "test")
CATALOGUE = "catalogue"  # names the embedded default held-out set wherever data is named
CATALOGUE_SIZE, CATALOGUE_TRAIN = 2000, 1600  # the embedded default: items [0, 1600) train, the rest held out
_ANSWER = re.compile(r"(Price is \$)\s*\d[\d,]*(?:\.\d*)?\s*$")  # a training text whose answer follows the prompt


def build_prompt(description: str) -> str:
    """The course's test prompt for one product description."""
    return f"{QUESTION}\n\n{description.strip()}\n\n{PRICE_PREFIX}"


MAX_DESCRIPTIONS = 64  # per prediction request


def prompts_for(descriptions: list[str], *, max_chars: int) -> list[str]:
    """Prompts for descriptions to price, refusing none, too many, empty or too long ones."""
    if not descriptions:
        raise InvalidPredictionInput("no description to price")
    if len(descriptions) > MAX_DESCRIPTIONS:
        raise InvalidPredictionInput(f"{len(descriptions)} descriptions; at most {MAX_DESCRIPTIONS} per request")
    for description in descriptions:
        if not description.strip():
            raise InvalidPredictionInput("a description is empty")
        if len(description) > max_chars:
            raise InvalidPredictionInput(f"a description has {len(description)} characters; the limit is {max_chars}")
    return [build_prompt(d) for d in descriptions]


def training_text(prompt: str, price: float) -> str:
    """The course's training text: the prompt followed by the price to the dollar (Python's round)."""
    return f"{prompt}{round(price)}.00"


@dataclass(frozen=True)
class HeldOutSet:
    """Items to price: one prompt and one true price each, and which are test items (the rest validate).

    Identified by a fingerprint of the items and the split: checkpoints are chosen on the
    validation part only, and the test part gives the chosen one's out-of-sample figure.
    """

    name: str
    prompts: list[str]
    prices: np.ndarray
    test: np.ndarray | None = None  # (n,) bool; default: a hash split with DEFAULT_TEST_SHARE
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if self.test is None:
            object.__setattr__(self, "test", hash_split(self.prompts, DEFAULT_TEST_SHARE))
        object.__setattr__(self, "test", np.asarray(self.test, dtype=bool))
        if self.test.shape != (len(self.prompts),):
            raise InvalidDataset(f"{self.name}: the split marks {self.test.size} items, not {len(self.prompts)}")
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.prompts, self.prices, self.test))

    def __len__(self) -> int:
        return len(self.prompts)


def fingerprint(prompts: list[str], prices: np.ndarray, test: np.ndarray) -> str:
    digest = hashlib.sha256()
    for prompt, price, is_test in zip(prompts, prices, test, strict=True):
        digest.update(f"{price:.2f}\x00{prompt}\x00{'t' if is_test else 'v'}\x01".encode())
    return digest.hexdigest()


def hash_split(prompts: list[str], test_share: float) -> np.ndarray:
    """Test items by a hash of their text: deterministic, independent of order, stable as data grows."""
    if not 0 <= test_share < 1:
        raise InvalidDataset(f"the test share must lie in [0, 1), not {test_share}")
    buckets = [int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "big") / 2**64 for p in prompts]
    return np.array(buckets) < test_share


def split_of(frame: pd.DataFrame, prompts: list[str], *, test_share: float, where: str) -> np.ndarray:
    """The `split` column's test / validation marks when the data has one, else a hash split."""
    if "split" not in frame.columns:
        return hash_split(prompts, test_share)
    names = frame["split"].astype("string").str.strip().str.lower()
    unknown = sorted(set(names.dropna()) - set(SPLIT_NAMES))
    if unknown or names.isna().any():
        raise InvalidDataset(f"{where}: 'split' must be one of {', '.join(SPLIT_NAMES)}; found {unknown or 'empty values'}")
    return (names == "test").to_numpy()


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a data file by its extension; nested JSON objects become dotted columns."""
    path = Path(path).expanduser()
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise InvalidDataset(f"{path}: unknown data format {path.suffix!r}; use one of {sorted(READERS)}")
    if not path.is_file():
        raise InvalidDataset(f"{path}: no such data file")
    try:
        if kind == "csv":
            frame = pd.read_csv(path)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.json_normalize(_json_records(path, lines=kind == "jsonl"))
    except InvalidDataset:
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for a broken file
        raise InvalidDataset(f"{path}: cannot read as {kind}: {exc}") from exc
    if frame.empty:
        raise InvalidDataset(f"{path}: the file holds no rows")
    return frame


def _json_records(path: Path, *, lines: bool) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if not lines:
        records = json.loads(text)
        return records if isinstance(records, list) else [records]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidDataset(f"{path}, line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise InvalidDataset(f"{path}, line {number}: expected a JSON object")
        records.append(record)
    return records


def positive_prices(frame: pd.DataFrame, column: str, *, where: str) -> np.ndarray:
    """The column as float prices, refusing missing, non-numeric and non-positive values."""
    if column not in frame.columns:
        raise InvalidDataset(f"{where}: no {column!r} column (columns: {', '.join(map(str, frame.columns))})")
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = frame.index[values.isna()].tolist()
    if bad:
        raise InvalidDataset(f"{where}: {column!r} is missing or not a number in row(s) {_rows(bad)}")
    bad = frame.index[values <= 0].tolist()
    if bad:
        raise InvalidDataset(f"{where}: {column!r} must be positive; row(s) {_rows(bad)} are not")
    return values.to_numpy(dtype=np.float64)


def _rows(index: list) -> str:
    shown = ", ".join(str(i) for i in index[:5])
    return shown + (f" and {len(index) - 5} more" if len(index) > 5 else "")


def prompts_of(frame: pd.DataFrame, *, where: str) -> list[str]:
    """One prompt per row, from `text`, `description`, or `title` + `details`."""
    if "text" in frame.columns:
        texts = frame["text"].astype("string")
        prompts = [_ANSWER.sub(r"\1", text) for text in texts.fillna("")]
        bad = [i for i, prompt in enumerate(prompts) if not prompt.endswith(PRICE_PREFIX)]
        if bad:
            raise InvalidDataset(f"{where}: 'text' must end with {PRICE_PREFIX!r}; row(s) {_rows(bad)} do not")
        return prompts
    return [build_prompt(d) for d in descriptions_of(frame, where=where)]


def descriptions_of(frame: pd.DataFrame, *, where: str) -> list[str]:
    """One product description per row, from `description`, or `title` + `details`."""
    if "description" in frame.columns:
        descriptions = frame["description"].astype("string").fillna("")
    elif "title" in frame.columns:
        details = frame["details"].astype("string").fillna("") if "details" in frame.columns else ""
        descriptions = frame["title"].astype("string").fillna("") + "\n" + details
    else:
        raise InvalidDataset(f"{where}: needs a 'text', 'description' or 'title' (+ 'details') column")
    descriptions = [d.strip() for d in descriptions]
    bad = [i for i, d in enumerate(descriptions) if not d]
    if bad:
        raise InvalidDataset(f"{where}: empty description in row(s) {_rows(bad)}")
    return descriptions


def read_descriptions(path: Path) -> list[str]:
    """Descriptions to price: each non-empty line of a `.txt` file, or the description column(s) of a table file."""
    if path.suffix.lower() != ".txt":
        return descriptions_of(read_table(path), where=str(path))
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidDataset(f"{path}: cannot read ({exc})") from exc
    if not any(lines):
        raise InvalidDataset(f"{path}: no descriptions (one per line)")
    return [line for line in lines if line]


def heldout_from_frame(
    frame: pd.DataFrame, *, name: str, test_share: float = DEFAULT_TEST_SHARE, where: str | None = None
) -> HeldOutSet:
    """The items of `frame` as a held-out set called `name`; errors name `where` (the file as given), else `name`."""
    frame, where = frame.reset_index(drop=True), where or name
    prices = positive_prices(frame, "price", where=where)
    prompts = prompts_of(frame, where=where)
    return HeldOutSet(name=name, prompts=prompts, prices=prices, test=split_of(frame, prompts, test_share=test_share, where=where))


_HF_DATASET = re.compile(r"^hf://datasets/(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w.-]+))?/(?P<file>[\w./-]+)$")


def fetch_dataset_file(url: str, *, token: str | None = None) -> Path:
    """Download `hf://datasets/<namespace>/<name>[@revision]/<file>` from the Hub (or `HF_ENDPOINT`); the local copy."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    match = _HF_DATASET.match(url)
    if match is None or ".." in url:
        raise InvalidDataset(f"{url}: expected hf://datasets/<namespace>/<name>[@revision]/<file>")
    try:
        return Path(
            hf_hub_download(match["repo"], match["file"], repo_type="dataset", revision=match["revision"], token=token or None)
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise InvalidDataset(f"{url}: cannot download ({type(exc).__name__}: {exc})") from exc


def load_heldout(
    path: str | Path | None = None, *, token: str | None = None, test_share: float = DEFAULT_TEST_SHARE
) -> HeldOutSet:
    """The items in `path` (a file, or an hf://datasets/... URL), or the generated catalogue's held-out part
    (`"catalogue"`, or None).

    Test items come from a `split` column, else from a hash of each item's text (`test_share` of them).
    """
    if path is None or str(path) == CATALOGUE:
        return heldout_from_frame(catalogue_split()[1], name="catalogue-heldout", test_share=test_share)
    if str(path).startswith("hf://"):
        return heldout_from_frame(read_table(fetch_dataset_file(str(path), token=token)), name=str(path), test_share=test_share)
    file = Path(path).expanduser()
    return heldout_from_frame(read_table(file), name=file.name, test_share=test_share, where=str(file))


def catalogue_split(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The embedded default data: (train, held-out) parts of the generated catalogue."""
    from pricer.evaluator.embedded.catalogue import catalogue_frame

    frame = catalogue_frame(CATALOGUE_SIZE, seed=seed)
    return frame.iloc[:CATALOGUE_TRAIN].reset_index(drop=True), frame.iloc[CATALOGUE_TRAIN:].reset_index(drop=True)
