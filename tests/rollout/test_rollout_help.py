"""`agentgym rollout --help` says which rows it runs and how often."""

import pytest

from agentgym.cli import main


def test_rollout_help_names_the_rows_it_uses(capsys):
    with pytest.raises(SystemExit) as done:
        main(["rollout", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "every row of data.val_files (or, when that is unset, data.train_files) actor_rollout_ref.rollout.n times" \
        in text
