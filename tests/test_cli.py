"""The ``smocam`` entry point: which errors become one line, and which stay tracebacks."""
import pytest

from captum_smocam.commands import data, flags
from captum_smocam.cli import main


def _failing(exc):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), KeyError("output_names")])
def test_programming_errors_are_not_hidden(monkeypatch, exc):
    # A TypeError or KeyError inside a command is a bug: it must keep its traceback, not pose as a user error.
    monkeypatch.setattr(data, "run_synth", _failing(exc))
    with pytest.raises(type(exc)):
        main(["synth", "--n", "1", "--out", "unused"])


@pytest.mark.parametrize(
    "exc, expected",
    [
        (MemoryError(), "out of memory"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                      "you tried to allocate 4398046511104 bytes.\nsecond line"), "can't allocate memory"),
    ],
)
def test_memory_and_runtime_errors_are_one_line(monkeypatch, capsys, exc, expected):
    monkeypatch.setattr(data, "run_synth", _failing(exc))
    assert main(["synth", "--n", "1", "--out", "unused"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("smocam: error: ") and expected in err
    assert len(err.strip().splitlines()) == 1


def _subparsers():
    from captum_smocam.cli import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)]
    return action.choices


def _options(subparser):
    return {s for a in subparser._actions for s in a.option_strings}


def test_the_registry_is_the_list_of_subcommands():
    from captum_smocam.cli import SUBCOMMANDS

    assert list(_subparsers()) == list(SUBCOMMANDS) == ["demo", "explain", "compare", "cohort", "synth", "references", "report"]


@pytest.mark.parametrize("command", ["demo", "explain", "compare", "cohort"])
def test_every_computing_command_has_the_same_flags(command):
    flags = _options(_subparsers()[command])
    assert {"--model", "--trust-checkpoint", "--layer", "--objective", "--n-steps", "--out", "--force", "--device",
            "--no-progress"} <= flags
    assert ("--target" in flags) == (command != "demo")


@pytest.mark.parametrize("command, default", [("explain", "smocam-out"), ("compare", "smocam-out"),
                                              ("demo", "smocam-demo"), ("cohort", "smocam-cohort")])
def test_default_output_folders_are_spelled_alike(command, default):
    from captum_smocam.commands import DEFAULT_OUT

    argv = {"explain": ["--image", "x", "--target", "0"], "compare": ["--image", "x", "--target", "0"],
            "demo": [], "cohort": ["--images", "x"]}[command]
    assert _subparsers()[command].parse_args(argv).out == DEFAULT_OUT[command] == default


@pytest.mark.parametrize("argv, dest, value, old, new", [
    (["explain", "--image", "x", "--target", "0", "--quiet"], "no_progress", True, "--quiet", "--no-progress"),
    (["demo", "--quiet"], "no_progress", True, "--quiet", "--no-progress"),
    (["cohort", "--images", "x", "--targets", "left_hippocampus"], "target", "left_hippocampus", "--targets",
     "--target"),
])
def test_renamed_flags_keep_their_old_spelling_with_a_warning(capsys, argv, dest, value, old, new):
    from captum_smocam.cli import build_parser

    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert err.startswith(f"smocam: warning: {old} is deprecated") and f"use {new}" in err
    assert len(err.strip().splitlines()) == 1
    build_parser().parse_args([a for a in argv if a != old] + ([new] if dest == "no_progress" else []))
    assert capsys.readouterr().err == ""  # the new spelling says nothing
    assert old not in _subparsers()[argv[0]].format_usage()  # hidden: --help lists the new spelling only


def test_only_given_smocam_settings_are_passed():
    from captum_smocam.cli import build_parser
    from captum_smocam.smocam import DEFAULT_OBJECTIVE

    parse = build_parser().parse_args
    assert flags.smocam_kwargs(parse(["explain", "--image", "x", "--target", "0"])) == {
        "objective": DEFAULT_OBJECTIVE}
    args = parse(["compare", "--image", "x", "--target", "0", "--objective", "poster", "--n-steps", "7"])
    assert flags.smocam_kwargs(args) == {"objective": "poster", "n_steps": 7}
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1 or None, got 0"):
        flags.smocam_kwargs(parse(["demo", "--n-steps", "0"]))


def test_a_long_error_is_printed_short(monkeypatch, capsys):
    """On today's main a ValueError holding a network's printout was printed whole (36-43 KB, issue 20)."""
    monkeypatch.setattr(data, "run_synth", _failing(ValueError("model " + "Conv3d(1, 8) " * 4000)))
    assert main(["synth", "--n", "1", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smocam: error: model Conv3d") and err.count("\n") == 1
    assert len(err) < 800 and "more characters" in err
