"""One vocabulary on the command line: help text and defaults on every option, --det everywhere, flags in errors."""

import argparse
import re

import h5py
import pytest

from calibsuite_h5source.cli import COMMANDS, build_parser, main
from calibsuite_h5source.cli.isolation import ISOLATION_HELP

READERS = ("info", "validate", "plot", "convert", "watch")


def subparsers():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_shows_its_default(command):
    p = subparsers()[command]
    text = p.format_help()
    required_choice = {a for g in p._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in p._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
        if action.option_strings and not action.required and action not in required_choice:
            shown = p._get_formatter()._get_help_string(action)
            assert "default" in shown, f"{command} {action.option_strings[0]}: no default in {shown!r}"
    assert "``" not in text and "`" not in text, text  # no RST markup in a terminal
    assert "docs/" not in text  # a wheel has no docs folder
    assert "Exit codes" in text
    if command in READERS:
        assert " ".join(ISOLATION_HELP.split()) in " ".join(text.split()), text
        assert "--timeout SECONDS" in text


def test_top_level_options_show_their_defaults():
    text = build_parser().format_help()
    assert "(default: 0)" in text and "Exit codes" in text and "COMMAND --help" in " ".join(text.split())


@pytest.mark.parametrize("command", ["fake", "demo", "plot", "convert", "watch"])
def test_det_everywhere_with_detector_as_alias(command):
    p = subparsers()[command]
    flags = {s for a in p._actions for s in a.option_strings}
    assert "--det" in flags and "--detector" in flags


def test_detector_alias_and_det_give_the_same_run(tmp_path, capsys):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main(["fake", str(a), "--det", "jungfrau", "--steps", "1", "--events", "2", "--modules", "1"]) == 0
    assert main(["fake", str(b), "--detector", "jungfrau", "--steps", "1", "--events", "2", "--modules", "1"]) == 0
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert list(fa) == list(fb) and "jungfrau" in fa
        assert (fa["jungfrau/0"][()] == fb["jungfrau/0"][()]).all()


def test_steps_takes_a_count_or_the_events_of_each_step(tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert main(["fake", str(out), "--steps", "3,2,4", "--shape", "1,4,4"]) == 0
    assert "3 steps (3, 2, 4 events)" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f["ancillaryData/nEvents"][()].tolist() == [3, 2, 4]
    assert main(["fake", str(out), "--steps", "1", "--events", "1", "--shape", "1,4,4", "--overwrite"]) == 0
    assert "1 step x 1 event," in capsys.readouterr().out
    assert main(["fake", str(out), "--steps", "3,2", "--events", "5", "--overwrite"]) == 2
    assert "--events goes with a step count; --steps 3,2 already gives the events of each step" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fake", str(out), "--steps", "three"])


@pytest.mark.parametrize("argv, said", [
    (["fake", "{out}", "--det", "nosuch"], "give --shape M,R,C"),
    (["fake", "{out}", "--run-type", "delayScan", "--steps", "2", "--scan-values", "1"],
     "--scan-values needs one value per step (2); got 1"),
    (["fake", "{out}", "--events", "0"], "every step needs at least one event (--steps, --events)"),
    (["fake", "{exists}"], "file exists; pass --overwrite to replace it"),
])
def test_errors_name_flags_not_python_arguments(tmp_path, capsys, argv, said):
    exists = tmp_path / "exists.h5"
    exists.write_bytes(b"")
    argv = [a.format(out=tmp_path / "o.h5", exists=exists) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err, err
    assert not re.search(r"\b(overwrite=True|shape=\(|scan_values|run_type)", err), err
