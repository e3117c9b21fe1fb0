import subprocess
import sys

import pytest

from psr.cli import build_parser, main

COMMANDS = {"synth", "prepare", "priors", "sr-pretrain", "train", "evaluate", "predict", "export"}


def test_every_subcommand_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: psr " + command in capsys.readouterr().out


def test_help_does_not_import_torch():
    # `psr --help` must stay instant: heavy imports belong inside each command's run().
    code = (
        "import sys; from psr.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_closed_pipe_ends_the_command_quietly():
    """``psr predict ... | head -1``: the reader goes away; no BrokenPipeError traceback."""
    code = (
        "import sys, psr.commands.priors as cmd; from psr.cli import main\n"
        "def flood(args):\n"
        "    for i in range(200_000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "cmd.run = flood\n"
        "sys.exit(main(['priors', '--data', 'd', '--out', 'o']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()  # like `head -1` exiting
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports a piped-to exit
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
