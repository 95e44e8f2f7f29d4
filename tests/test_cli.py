"""The ``smocam`` entry point: which errors become one line, and which stay tracebacks."""
import pytest

from captum_smocam import cli
from captum_smocam.cli import main


def _failing(exc):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), KeyError("output_names")])
def test_programming_errors_are_not_hidden(monkeypatch, exc):
    # A TypeError or KeyError inside a command is a bug: it must keep its traceback, not pose as a user error.
    monkeypatch.setattr(cli, "_run_synth", _failing(exc))
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
    monkeypatch.setattr(cli, "_run_synth", _failing(exc))
    assert main(["synth", "--n", "1", "--out", "unused"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("smocam: error: ") and expected in err
    assert len(err.strip().splitlines()) == 1
