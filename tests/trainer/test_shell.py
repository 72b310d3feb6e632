"""Tests for trainer.shell: the Ctrl+C shell driven by scripted input on a real model."""

from __future__ import annotations

import types

import pytest
import torch

from trainer.optimisers import get_hyper, make_optimiser
from trainer.shell import user_input


class StandInTrainer:
    """The parts of a trainer the shell uses, on a real module and optimiser."""

    def __init__(self, optimiser: str = "SGD", settings: dict | None = None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 2)
        self.optimizer = make_optimiser(
            self.model.parameters(), optimiser, settings or {"lr": 0.1, "mom": 0.9, "wd": 0.0}
        )
        self.exp_config = types.SimpleNamespace(
            save_name="demo-run", history_freq=100, preview_kwargs={"max_z_pred": 3}
        )
        self.previews: list[dict] = []
        self.debug_batches = 0

    def preview_slice(self, **kwargs):
        self.previews.append(kwargs)

    def debug_getcnnbatch(self):
        self.debug_batches += 1


def scripted(lines):
    """An input function that returns ``lines`` in turn, then signals end of input."""
    it = iter(lines)
    prompts = []

    def read(prompt=""):
        prompts.append(prompt)
        try:
            item = next(it)
        except StopIteration:
            raise EOFError from None
        if isinstance(item, BaseException):
            raise item
        return item

    read.prompts = prompts
    return read


def run(lines, trainer=None, **scope):
    trainer = trainer or StandInTrainer()
    local_vars = {"trainer": trainer, **scope}
    return user_input(local_vars, input_fn=scripted(lines)), trainer, local_vars


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["q"], "q"),
        (["kill"], "kill"),
        (["  kill  "], "kill"),
        (["exit"], "exit"),
        (["exit()"], "exit()"),
        ([], "q"),  # EOF acts like q
        (["x = 1", "help"], "q"),
    ],
)
def test_leaving_returns_the_last_command(lines, expected):
    assert run(lines)[0] == expected


def test_banner_names_the_run_and_help_reprints_it(capsys):
    run(["help", "q"])
    out = capsys.readouterr().out
    assert out.count("training 'demo-run' is paused") == 2
    assert "setlr <float>" in out


def test_sethist():
    _, trainer, _ = run(["sethist 25", "q"])
    assert trainer.exp_config.history_freq == 25


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [("setlr 0.005", "lr", 0.005), ("setmom 0.5", "mom", 0.5), ("setwd 1e-4", "wd", 1e-4)],
)
def test_set_hyper_parameters_on_sgd(line, key, value):
    _, trainer, _ = run([line, "q"])
    assert get_hyper(trainer.optimizer, key) == pytest.approx(value)


def test_setmom_on_adam_sets_beta1():
    trainer = StandInTrainer("Adam", {"lr": 1e-3, "beta2": 0.99})
    run(["setmom 0.7", "q"], trainer=trainer)
    assert trainer.optimizer.param_groups[0]["betas"] == (0.7, 0.99)


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("setlr", "usage: setlr <float>"),
        ("setlr fast", "usage: setlr <float> ('fast' is not a number)"),
        ("setlr nan", "the value must be finite"),
        ("sethist 2.5", "usage: sethist <int> ('2.5' is not an int)"),
        ("sethist 0", "the value must be > 0"),
        ("load", "usage: load <file.pt>"),
        ("load /nonexistent/w.pt", "load: no such file: /nonexistent/w.pt"),
    ],
)
def test_bad_shortcut_arguments_print_a_hint_and_keep_the_shell(capsys, line, hint):
    result, trainer, _ = run([line, "sethist 7", "q"])
    assert hint in capsys.readouterr().out
    assert result == "q" and trainer.exp_config.history_freq == 7  # still alive afterwards
    assert get_hyper(trainer.optimizer, "lr") == pytest.approx(0.1)


def test_setmom_without_momentum_prints_hint(capsys):
    trainer = StandInTrainer("AdaGrad", {"lr": 0.1})
    run(["setmom 0.9", "q"], trainer=trainer)
    assert "AdaGrad has no parameter 'mom'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("word", "match"),
    [("sf", "sf (filter mosaics) is not available"), ("actstats", "actstats (activation")],
)
def test_elektronn2_shortcuts_without_an_equivalent_say_so(capsys, word, match):
    run([word, "q"])
    out = capsys.readouterr().out
    assert match in out and "NameError" not in out


def test_preview_and_debugbatch_call_the_trainer():
    _, trainer, _ = run(["preview", "debugbatch", "preview", "q"])
    assert trainer.previews == [{"max_z_pred": 3}, {"max_z_pred": 3}]
    assert trainer.debug_batches == 1


def test_failing_shortcut_prints_traceback_and_keeps_the_shell(capsys):
    trainer = StandInTrainer()

    def broken(**kwargs):
        raise RuntimeError("no preview data")

    trainer.preview_slice = broken
    result, _, _ = run(["preview", "sethist 9", "q"], trainer=trainer)
    out = capsys.readouterr().out
    assert "RuntimeError: no preview data" in out and "'preview' failed" in out
    assert result == "q" and trainer.exp_config.history_freq == 9


def test_paramstats_and_gradstats(capsys):
    trainer = StandInTrainer()
    trainer.model(torch.ones(4, 3)).sum().backward()
    run(["paramstats", "gradstats", "q"], trainer=trainer)
    out = capsys.readouterr().out
    w = trainer.model.weight.detach()
    assert f"{w.mean().item():.3g}" in out
    # d(sum)/d(bias) is 4 for every element: mean 4, std 0
    bias_grad_row = [line for line in out.splitlines() if line.startswith("bias")][-1]
    assert bias_grad_row.split()[2:] == ["4", "0", "4", "4", "4"]


def test_gradstats_before_backward_says_none(capsys):
    run(["gradstats", "q"])
    assert "none yet" in capsys.readouterr().out


def test_python_lines_run_in_the_given_scope(capsys):
    result, trainer, scope = run(
        [
            "x = 21 * 2",
            "trainer.exp_config.history_freq = x",
            "for i in range(2):",
            "    print('loop', i)",
            "",
            "print(missing_name)",
            "q",
        ]
    )
    out, err = capsys.readouterr()
    assert scope["x"] == 42 and trainer.exp_config.history_freq == 42
    assert "loop 0\nloop 1" in out
    assert "NameError" in err  # the error was shown and the shell went on to 'q'
    assert result == "q"


def test_continuation_prompt_for_blocks():
    read = scripted(["if True:", "    y = 1", "", "q"])
    scope = {"trainer": StandInTrainer()}
    user_input(scope, input_fn=read)
    assert read.prompts[1:3] == ["... ", "... "] and not read.prompts[3].startswith("...")
    assert scope["y"] == 1


def test_ctrl_c_inside_the_shell_explains_how_to_leave(capsys):
    result, _, _ = run([KeyboardInterrupt(), "kill"])
    assert "type 'q' to continue training, 'kill' to stop it" in capsys.readouterr().out
    assert result == "kill"


@pytest.mark.parametrize("wrap", [False, True])
def test_load_weights_from_state_dict_or_snapshot(tmp_path, wrap):
    source = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(source.weight, 0.25)
    state = source.state_dict()
    if wrap:  # the trainer's snapshot layout: model state under 'model', plus numpy RNG state
        import numpy as np

        state = {"model": state, "step": 10, "rng": {"numpy": np.random.get_state()}}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    _, trainer, _ = run([f"load {path}", "q"])
    assert torch.equal(trainer.model.weight, source.weight)


def test_load_wrong_shapes_keeps_the_shell(tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(5, 5).state_dict(), path)
    result, trainer, _ = run([f"load {path}", "q"])
    assert "size mismatch" in capsys.readouterr().out
    assert result == "q" and trainer.model.weight.shape == (2, 3)


def test_shortcuts_without_trainer_print_hint(capsys):
    result = user_input({}, input_fn=scripted(["setlr 0.1", "q"]))
    assert "no 'trainer' in this scope" in capsys.readouterr().out
    assert result == "q"
