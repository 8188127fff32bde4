"""What the CLI's progress bar shows of a metrics event: losses, or a reinforcement job's
rewards (OpenAI's RFT metrics carry no loss worth reading)."""

from __future__ import annotations

from openft.cli.user import step_figures


def test_a_supervised_step_shows_its_losses() -> None:
    assert step_figures({"step": 3, "train_loss": 1.23456}) == "loss 1.235"
    assert step_figures({"train_loss": 1.0, "valid_loss": 0.5}) == "loss 1.000, valid 0.500"


def test_a_reinforcement_step_shows_its_rewards() -> None:
    data = {"step": 3, "train_mean_reward": 0.25, "train_loss": 0.01}
    assert step_figures(data) == "reward 0.250"
    data["full_valid_mean_reward"] = 0.75
    assert step_figures(data) == "reward 0.250, valid 0.750"
