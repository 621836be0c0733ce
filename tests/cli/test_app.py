"""Exit codes of the command shell shared by every subcommand."""

from simcompress.cli import main


def test_usage_error_exits_2(capsys):
    assert main(["simulate", "--events", "many"]) == 2
    assert "--events" in capsys.readouterr().err


def test_unknown_command_exits_2():
    assert main(["no-such-command"]) == 2


def test_version_lists_torch(capsys):
    assert main(["version"]) == 0
    assert "torch" in capsys.readouterr().out
