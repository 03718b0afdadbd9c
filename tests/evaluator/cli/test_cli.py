"""`pricer` as a user runs it: JSON and table output, and bad input that fails cleanly."""

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from huggingface_hub import HfApi

import pricer
from pricer.evaluator.cli import evaluating
from pricer.evaluator.cli.main import EXIT_STATUSES, build_parser, main
from pricer.evaluator.data import catalogue_split
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.settings import Settings
from pricer.evaluator.store.evaluations import Store
from tests.hubserver import HubServer
from tests.server import ServerProcess, validation_size

RANKING_KEYS = {"revision", "commit", "step", "epoch", "n", "mae", "rmsle", "hit_rate", "intervals"}


@pytest.fixture
def heldout_file(tmp_path):
    path = tmp_path / "heldout.jsonl"
    catalogue_split()[1].iloc[:32].to_json(path, orient="records", lines=True)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _count() -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from pricer.evaluator.store.evaluations import EvaluationRow

    with Session(Store(Settings().store_url).engine) as session:
        return session.scalar(select(func.count()).select_from(EvaluationRow))


DESCRIPTION = "Stainless steel 5-quart stand mixer, 10 speeds"


def test_evaluate_best_predict(capsys, tmp_path, tiny_run, heldout_file):
    code, out, _ = run(capsys, "evaluate", str(tiny_run), "--all", "--data", str(heldout_file), "--json")
    assert code == 0
    ranking = json.loads(out)
    assert len(ranking) == 3 and all(RANKING_KEYS <= set(entry) for entry in ranking)
    assert sorted(e["step"] for e in ranking) == [10, 20, 30] and all(e["n"] == validation_size(heldout_file) for e in ranking)
    assert [e["mae"] for e in ranking] == sorted(e["mae"] for e in ranking)

    data = ("--data", str(heldout_file))  # every command names its held-out set the same way
    code, out, _ = run(capsys, "best", str(tiny_run), *data, "--json", "--rule", "min")
    lowest = json.loads(out)
    assert code == 0 and lowest["commit"] == ranking[0]["commit"] and lowest["runner_up"]["commit"] == ranking[1]["commit"]
    code, out, _ = run(capsys, "best", str(tiny_run), *data, "--json", "--rule", "earliest")
    best = json.loads(out)
    assert code == 0 and "not significantly worse" in best["rule"] and len(best["candidates"]) == 3
    assert best["step"] <= lowest["step"]  # the rule never picks a later checkpoint than the lowest error
    assert best["test"]["metrics"]["n"] == 32 - validation_size(heldout_file)  # the out-of-sample figure: test items only
    code, out, err = run(capsys, "best", str(tiny_run), "--data", "catalogue")
    assert code == 1 and "nothing is evaluated yet on catalogue-heldout" in err  # another held-out set, named

    code, out, _ = run(capsys, "predict", str(tiny_run), "Stainless steel 5-quart stand mixer, 10 speeds", *data, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["commit"] == lowest["commit"] and 0 <= answer["price"] <= 999  # the default rule: min

    many = tmp_path / "many.jsonl"  # more descriptions than one request takes: priced in several
    catalogue_split()[1].iloc[:70].to_json(many, orient="records", lines=True)
    code, out, _ = run(capsys, "predict", str(tiny_run), "--file", str(many), *data, "--json")
    answers = json.loads(out)
    assert code == 0 and len(answers) == 70 and {a["commit"] for a in answers} == {lowest["commit"]}
    lines = tmp_path / "descriptions.txt"
    lines.write_text("Stainless steel 5-quart stand mixer, 10 speeds\n\nCordless drill, 20V, two batteries\n")
    code, out, _ = run(capsys, "predict", str(tiny_run), "--file", str(lines), *data)
    assert code == 0 and out.count("\n") == 3 and out.splitlines()[0].startswith(f"${answer['price']:,.2f} (80%: $")
    assert out.splitlines()[0].endswith("Stainless steel 5-quart stand mixer, 10 speeds") and answer["interval"][0] <= answer["price"] <= answer["interval"][1]

    code, out, _ = run(capsys, "evaluate", str(tiny_run), "--revision", "checkpoint-20", "--data", str(heldout_file))
    assert code == 0 and "checkpoint-20" in out and "avg error" in out and "checkpoint-10" not in out
    code, out, _ = run(capsys, "best", str(tiny_run), *data, "--metric", "hit_rate")
    assert code == 0 and "never used to choose" in out and "a constant guess" in out
    # the other checkpoint it is compared with, and the difference in hit-rate points, interval and all
    assert re.search(r"^(best|runner-up): checkpoint-\d+, P\(best\) \d+%; chosen minus \1: [+-]?\d+\.\d pts \[", out, re.M), out


def test_evaluate_race_ranks_the_survivors_says_what_it_saved_and_best_chooses_among_them(capsys, tiny_run, heldout_file):
    code, out, err = run(capsys, "evaluate", str(tiny_run), "--all", "--race", "--data", str(heldout_file), "--json")
    assert code == 0, err
    raced = json.loads(out)
    steps = sorted([e["step"] for e in raced["ranking"]] + [d["step"] for d in raced["dropped"]])
    assert steps == [10, 20, 30] and raced["full_scorings"] == 3 * validation_size(heldout_file)
    assert raced["scorings"] <= raced["full_scorings"] and raced["saved"] == pytest.approx(1 - raced["scorings"] / raced["full_scorings"], abs=1e-4)
    code, out, _ = run(capsys, "best", str(tiny_run), "--data", str(heldout_file), "--json")
    assert code == 0 and json.loads(out)["commit"] == raced["ranking"][0]["commit"]  # min: the lowest of the survivors
    code, out, err = run(capsys, "evaluate", str(tiny_run), "--race", "--estimator", "auto", "--data", str(heldout_file))
    assert code == 1 and "one estimator" in err
    code, out, _ = run(capsys, "evaluate", str(tiny_run), "--race", "--data", str(heldout_file))
    assert code == 0 and "validation-item scorings a full evaluation makes" in out


def test_watch_once_evaluates_every_checkpoint_and_states_the_choice(capsys, tiny_run, heldout_file):
    code, out, err = run(capsys, "watch", str(tiny_run), "--once", "--interval", "0.2", "--data", str(heldout_file), "--json")
    assert code == 0, err
    choice = json.loads(out)
    assert choice["repo"] == f"local/{tiny_run.name}" and [c["step"] for c in choice["candidates"]] == [10, 20, 30]
    assert choice["commit"] in {c["commit"] for c in choice["candidates"]}


def test_bad_input_fails_cleanly_and_writes_nothing(capsys, tmp_path, tiny_run, heldout_file, monkeypatch):
    other_base = make_tiny_base(tmp_path / "other-base", hidden=64, pretrain_steps=0)
    pickled = tmp_path / "pickled-run" / "checkpoint-5"
    pickled.mkdir(parents=True)
    (pickled / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"title": "mixer", "price": 10}\n{"title": "drill", "price": "ten"}\n')
    noprice = tmp_path / "noprice.jsonl"
    noprice.write_text('{"title": "mixer"}\n')
    cases = [
        (["evaluate", str(tmp_path / "no-run")], "no such run folder"),
        (["evaluate", str(tiny_run), "--revision", "checkpoint-99"], "no checkpoint folder 'checkpoint-99'"),
        (["evaluate", str(tiny_run), "--base", str(other_base)], "fits no module of the base model"),
        (["evaluate", str(tmp_path / "pickled-run")], "safetensors only"),
        (["evaluate", str(tiny_run), "--data", str(broken)], "not a number in row(s) 1"),
        (["evaluate", "not/a/repo"], "not a Hub repo id"),
        (["best", str(tiny_run)], "nothing is evaluated yet"),
        (["predict", str(tiny_run), "  "], "a description is empty"),
        (["predict", str(tiny_run), "a lamp"], "nothing is evaluated yet"),
        (["predict", str(tiny_run)], "give descriptions, or --file"),
        (["predict", str(tiny_run), "--file", str(tmp_path / "none.txt")], f"{tmp_path / 'none.txt'}: cannot read"),
        (["evaluate", str(tiny_run), "--data", str(noprice)], f"{noprice}: no 'price' column"),  # the path as given
    ]
    for argv, message in cases:
        code, out, err = run(
            capsys, *argv, *(["--data", str(heldout_file)] if argv[0] == "evaluate" and "--data" not in argv else [])
        )
        assert code == 1, argv
        assert message in err, (argv, err)
        assert "Traceback" not in err and out == ""
    assert _count() == 0


def test_options_are_spelt_out_and_a_misspelt_one_shows_its_subcommands_usage(capsys, tiny_run):
    for argv, usage in (
        (["evaluate", str(tiny_run), "--al"], "usage: pricer evaluate"),
        (["data", "--outpt", "x"], "usage: pricer data"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        err = capsys.readouterr().err
        assert (
            exited.value.code == 2  # a usage error: argparse's status, distinct from pricer's own errors (1)
            and err.startswith(usage)
            and f"unrecognized arguments: {' '.join(argv[-2:] if argv[0] == 'data' else argv[-1:])}" in err
        )


def test_with_json_an_error_is_a_json_object_on_stderr(capsys, tiny_run):
    code, out, err = run(capsys, "best", str(tiny_run), "--json")
    assert code == 1 and out == ""
    assert json.loads(err) == {"error": "NotEvaluated", "detail": "local/tiny-run: nothing is evaluated yet on catalogue-heldout"}


def test_data_writes_the_catalogues_items_that_train_and_evaluate_read(capsys, tmp_path):
    from pricer.evaluator.data import load_heldout

    code, out, _ = run(capsys, "data", "--output", str(tmp_path / "data"), "--json")
    written = json.loads(out)
    assert code == 0 and written["train"]["items"] == 1600 and written["heldout"]["items"] == 400
    heldout, catalogue = load_heldout(written["heldout"]["path"]), load_heldout("catalogue")
    assert heldout.prompts == catalogue.prompts and (heldout.prices == catalogue.prices).all()
    assert (heldout.test == catalogue.test).all()  # the same validation and test items as the built-in set
    before = (tmp_path / "data" / "train.jsonl").read_bytes()
    code, _, err = run(capsys, "data", "--output", str(tmp_path / "data"))
    assert code == 1 and "already exist" in err and (tmp_path / "data" / "train.jsonl").read_bytes() == before
    assert run(capsys, "data", "--output", str(tmp_path / "data"), "--force")[0] == 0


def test_hub_repo_errors(capsys, tmp_path, heldout_file, monkeypatch):
    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        code, _, err = run(capsys, "evaluate", "org/missing-run", "--revision", "main", "--data", str(heldout_file))
        assert code == 1 and "no such Hub repo" in err
        HfApi(endpoint=hub.endpoint, token=False).create_repo("org/no-checkpoint-yet")  # one commit, and no adapter in it
        for argv in (["revisions", "org/no-checkpoint-yet"], ["evaluate", "org/no-checkpoint-yet", "--data", str(heldout_file)]):
            code, out, err = run(capsys, *argv)
            assert code == 1 and out == "", (argv, out)
            assert err == "error: org/no-checkpoint-yet: no commit holds an adapter (adapter_config.json)\n", (argv, err)


def cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    """`pricer ...` in its own process, as a shell runs it."""
    return subprocess.run([sys.executable, "-m", "pricer.evaluator.cli.main", *argv], text=True, timeout=120, **kwargs)


def test_hub_offline_with_nothing_cached_is_one_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # read as huggingface_hub is imported: a process of its own
    for argv in (["revisions", "org/run"], ["evaluate", "org/run", "--revision", "main", "--data", "catalogue"]):
        done = cli(*argv, env=env, capture_output=True)
        assert done.returncode == 1 and done.stdout == "", (argv, done.stderr)
        assert done.stderr.splitlines() == [
            "error: org/run: the Hub's offline mode is on (HF_HUB_OFFLINE), and listing or resolving revisions needs the Hub"
        ], argv


def test_a_reader_that_stops_early_ends_pricer_quietly(tmp_path):
    """`pricer ... | head -1`: no traceback when the reader is gone; 141, as a shell reports a command SIGPIPE ended."""
    scored = tmp_path / "scored.jsonl"
    scored.write_text('{"price": 10, "guess": 12}\n{"price": 20, "guess": 18}\n')
    # --help: argparse drops the failed write itself (status 0); what is left to check is Python's flush at exit
    for argv, status in ((["score", str(scored), "--guess-field", "guess", "--json"], 141), (["--help"], 0)):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before pricer writes a byte: every write fails, as after `head` exits
        try:
            done = cli(*argv, stdout=write, stderr=subprocess.PIPE)
        finally:
            os.close(write)
        assert done.returncode == status and done.stderr == "", (argv, done.stderr)


def test_version_is_the_packages(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"pricer {pricer.__version__}\n"
    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == pricer.__version__  # one version, said the same everywhere


def test_exit_statuses_are_distinct_and_listed_in_the_help(capsys, monkeypatch):
    assert list(EXIT_STATUSES) == [0, 1, 2, 130, 141]  # a script's contract: pricer's error 1, a usage error 2
    listed = build_parser().format_help().split("exit status:\n")[1].splitlines()
    assert [int(line.split()[0]) for line in listed] == [0, 1, 2, 130, 141]

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluating, "cmd_score", interrupted)  # Ctrl-C while a command runs
    assert run(capsys, "score", "x.jsonl", "--guess-field", "g") == (130, "", "interrupted\n")


@pytest.mark.parametrize(
    ("argv", "verbosity"),
    [
        (["best", "run"], None),
        (["-v", "best", "run"], "verbose"),
        (["best", "run", "-v"], "verbose"),
        (["best", "--verbose", "run"], "verbose"),
        (["-q", "best", "run"], "quiet"),
        (["best", "run", "--quiet"], "quiet"),
        (["-q", "best", "run", "-v"], "verbose"),  # the last one given wins
        (["-v", "best", "run", "-q"], "quiet"),
        (["best", "run", "-q", "-v"], "verbose"),
    ],
)
def test_verbose_and_quiet_go_before_or_after_the_command(argv, verbosity):
    assert build_parser().parse_args(argv).verbosity == verbosity


def test_quiet_keeps_the_output_and_drops_the_progress_bar(capsys, tiny_run, heldout_file):
    data = ("--data", str(heldout_file))
    code, out, err = run(capsys, "evaluate", str(tiny_run), "--revision", "checkpoint-10", *data, "-q")
    assert code == 0 and "checkpoint-10" in out and err == ""
    code, out, err = run(capsys, "evaluate", str(tiny_run), "--revision", "checkpoint-20", *data)
    assert code == 0 and "checkpoint-20" in out and "100%|" in err  # without -q: the bar


def test_every_option_of_every_command_says_what_it_does():
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    missing = [
        f"pricer {name} {'/'.join(action.option_strings) or action.dest}"
        for name, command in [("", parser), *commands.choices.items()]
        for action in command._actions
        if not action.help
    ]
    missing += [f"pricer {command.dest}: its line in `pricer --help`" for command in commands._choices_actions if not command.help]
    assert missing == []
    assert all({"-v", "-q", "--verbose", "--quiet"} <= set(command._option_string_actions) for command in commands.choices.values())


def test_bad_values_and_settings_are_one_line(capsys, tmp_path, monkeypatch):
    for argv, message in (
        (["best", "run", "--patience", "0"], "argument --patience: must be above zero, not 0"),
        (["watch", "run", "--interval", "-1"], "argument --interval: must be above zero, not -1"),
        (["demo", "--items", "0"], "argument --items: must be above zero, not 0"),
        (["evaluate", "run", "--batch-size", "nan"], "argument --batch-size: invalid int value: 'nan'"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and message in err, (argv, err)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv, message in (
        (["evaluate", "~no-such-user-of-pricer/run"], "error: ~no-such-user-of-pricer/run: no such run folder"),
        (["data", "--output", str(blocker / "data")], f"error: {blocker / 'data'}: cannot write the data files"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "" and err.startswith(message) and err.count("\n") == 1, (argv, err)
    monkeypatch.setenv("PRICER_BATCH_SIZE", "0")  # a setting from the environment, out of range
    code, out, err = run(capsys, "best", str(tmp_path))
    assert code == 1 and err == (
        "error: invalid setting (a flag or a PRICER_* variable): batch_size: Input should be greater than or equal to 1\n"
    )


def test_demo_trains_evaluates_through_the_queue_charts_and_serves(tiny_base, tmp_path):
    home = tmp_path / "pricer-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "tiny-llama").symlink_to(tiny_base)  # the base is built (and tested) once per session
    server = ServerProcess({"PRICER_HOME": str(home), "PYTHONUNBUFFERED": "1"}, tmp_path / "demo.log")
    server.command = ["demo", "--items", "80", "--epochs", "2", "--save-steps", "10", "--port", str(server.port)]
    with server.start(timeout=600):
        out = server.log.read_text()
        assert "checkpoint-10" in out and "checkpoint-20" in out and "chosen of 2: checkpoint-" in out
        assert "curl -s -X POST http://127.0.0.1" in out
        best = server.client.get("/best-checkpoint").json()
        assert best["repo"] == "local/demo-80x2-10" and best["metrics"]["n"] == validation_size(None) and best["evaluated"] == 2
        answer = server.client.post("/predict", json={"description": "Stainless steel stand mixer"}).json()
        assert answer["commit"] == best["commit"] and answer["price"] >= 0
        assert f'<span id="chosen-revision">{best["revision"]}</span>' in server.client.get("/").text  # the dashboard
    reports = home / "reports" / "demo-80x2-10"
    assert f'<span id="chosen-revision">{best["revision"]}</span>' in (reports / "report.html").read_text()
    for chart in ("validation-error.png", "chosen-truth-vs-prediction.png"):
        assert (reports / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (reports / chart).stat().st_size > 10_000
    # the CLI reads the same store: the demo's ranking through `pricer best`
    cli = subprocess.run(
        [sys.executable, "-m", "pricer.evaluator.cli.main", "best", str(home / "runs" / "demo-80x2-10"), "--json"],
        env={**os.environ, "PRICER_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(cli.stdout) == {**best, "served": False}  # the same answer, in the same shape


def test_demo_no_serve_stops_after_the_ranking(capsys, tiny_base, tmp_path):
    home = tmp_path / "pricer-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "tiny-llama").symlink_to(tiny_base)
    code, out, err = run(capsys, "demo", "--items", "40", "--epochs", "2", "--save-steps", "5", "--no-serve")
    assert code == 0, err
    assert (
        "checkpoint-5" in out
        and "checkpoint-10" in out
        and "validation-error.png" in out
        and "report.html" in out
        and "serving" not in out
    )


def test_with_no_test_part_every_item_chooses_and_the_figure_is_cross_fitted(capsys, tiny_run, heldout_file, monkeypatch):
    monkeypatch.setenv("PRICER_TEST_SHARE", "0")
    assert run(capsys, "evaluate", str(tiny_run), "--data", str(heldout_file))[0] == 0
    code, out, _ = run(capsys, "best", str(tiny_run), "--data", str(heldout_file), "--json")
    best = json.loads(out)
    assert code == 0 and best["test"] is None and best["metrics"]["n"] == 32  # every held-out item chose
    assert best["cross_fitted"]["folds"] == 20 and best["cross_fitted"]["value"] > 0
    low, high = best["cross_fitted"]["spread"]
    assert low <= best["cross_fitted"]["value"] <= high
    assert "cross-fitted" in run(capsys, "best", str(tiny_run), "--data", str(heldout_file))[1]


def test_a_bad_store_url_or_an_unwritable_output_is_one_line_and_no_password(capsys, tiny_run, heldout_file, tmp_path):
    for db, said in [("nonsense://", "cannot open a store at nonsense://"), ("not a url", "is not a database URL"),
                     ("postgresql+pg8000://u:secret@h/db", "pricer[postgres]")]:
        status, out, err = run(capsys, "best", str(tiny_run), "--db", db, "--data", str(heldout_file))
        assert status == 1 and said in err and "secret" not in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert run(capsys, "evaluate", str(tiny_run), "--revision", "checkpoint-10", "--data", str(heldout_file))[0] == 0
    (tmp_path / "a-file").write_text("")  # no folder can be made under it
    status, _, err = run(capsys, "report", str(tiny_run), "--data", str(heldout_file), "--output", str(tmp_path / "a-file" / "x.html"))
    assert (status, err.strip()) == (1, f"error: cannot use {tmp_path / 'a-file'}: File exists")  # mkdir says so
