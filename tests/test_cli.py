import json

from typer.testing import CliRunner

import dmnn
from dmnn.cli import app
from dmnn.errors import UsageError

runner = CliRunner()


def test_models_json_lists_every_model_with_its_family():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == dmnn.list_models()
    assert {r["method"] for r in rows} == {"static", "dmnn", "twin", "aig", "drnet", "lcnet"}


def test_summary_json_has_plain_integer_numbers_from_the_table():
    result = runner.invoke(app, ["summary", "dmnn_resnet50", "--sub-blocks", "4", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    table = dmnn.create_model("dmnn_resnet50", num_sub_blocks=4).macs_table()
    for key in ("params", "macs", "macs_min", "controller_macs"):
        assert isinstance(info[key], int), key
    assert (info["macs"], info["macs_min"], info["controller_macs"]) == (
        table.full, table.minimum, table.controller_total)
    assert len(info["blocks"]) == 16 and info["blocks"][0]["sub_blocks"] == 4
    assert info["blocks"][0]["sub_block_width"] == 24


def test_summary_input_size_and_num_classes():
    result = runner.invoke(
        app, ["summary", "resnet20", "--input-size", "64", "--num-classes", "100", "--json"])
    info = json.loads(result.stdout)
    assert info["input_size"] == 64 and info["num_classes"] == 100
    assert info["macs"] == dmnn.create_model("resnet20", num_classes=100).macs_table(64).full


def test_summary_text_shows_the_numbers():
    result = runner.invoke(app, ["summary", "dmnn_resnet56"])
    assert result.exit_code == 0
    assert "125,546,496" in result.stdout and "503,808" in result.stdout


def test_bad_input_is_one_line_and_exit_2():
    for args, needle in [
        (["summary", "resnet5"], "unknown model name"),
        (["summary", "resnet56", "--sub-blocks", "2"], "--sub-blocks applies"),
        (["summary", "dmnn_resnet56", "--sub-blocks", "3"], "num_sub_blocks=3"),
        (["summary", "dmnn_resnet56", "--sub-blocks", "0"], "num_sub_blocks"),
        (["summary", "resnet20", "--input-size", "0"], "input_size"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, args
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, args


def test_a_bug_keeps_its_traceback_and_says_it_is_one(monkeypatch):
    """#31: an error dmnn did not raise on purpose is never shortened to a one-liner."""
    def broken(*args, **kwargs):
        raise TypeError("unsupported operand")  # not a DmnnError: a bug

    monkeypatch.setattr("dmnn.cli.info_cmd.summarize_model", broken)
    result = runner.invoke(app, ["summary", "resnet20"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "TypeError: unsupported operand" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unexpected TypeError") and "bug" in last


def test_debug_shows_the_traceback_of_a_one_line_error():
    plain = runner.invoke(app, ["summary", "no_such_model"])
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("error: unknown model name")
    for args, env in (["--debug", "summary", "no_such_model"], {}), \
            (["summary", "no_such_model"], {"DMNN_DEBUG": "1"}):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 1 and isinstance(result.exception, UsageError), args
    # the flag belongs to one invocation: the next one is plain again
    again = runner.invoke(app, ["summary", "no_such_model"])
    assert again.exit_code == 2 and "Traceback" not in again.stderr
