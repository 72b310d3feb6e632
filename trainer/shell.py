"""The interactive shell a user gets by pressing Ctrl+C during training.

Shortcut words change the running training (learning rate, history frequency, ...); anything
else is executed as Python in the trainer's scope. Built on ``code.InteractiveConsole`` only.

Example:
    >>> user_input({"trainer": trainer})  # doctest: +SKIP
    user@voxelboard: setlr 1e-4
    user@voxelboard: q
"""

from __future__ import annotations

import code
import getpass
import math
import socket
import sys
import traceback
from collections.abc import Callable, MutableMapping
from typing import Any

from trainer.optimisers import get_hyper, set_hyper

SHORTCUTS = {
    "q": "leave the shell and continue training (also: Ctrl+D, exit)",
    "kill": "leave the shell and stop training (a FINAL snapshot is saved)",
    "help": "show this help",
    "sethist <int>": "set history_freq (steps between monitoring rows)",
    "setlr <float>": "set the learning rate",
    "setmom <float>": "set the momentum (or Adam's beta1)",
    "setwd <float>": "set the weight decay",
    "preview": "make a preview now (trainer.preview_slice)",
    "paramstats": "print statistics of the model parameters",
    "gradstats": "print statistics of the last gradients",
    "debugbatch": "plot one training batch into the run directory (trainer.debug_getcnnbatch)",
    "load <file.pt>": "load model weights from a snapshot or state_dict file",
    "ip": "embedded IPython shell, if IPython is installed",
}

_LEAVE = {"q": "q", "exit": "q", "quit": "q", "exit()": "q", "quit()": "q", "kill": "kill"}
_HYPER = {"setlr": "lr", "setmom": "mom", "setwd": "wd"}
#: ELEKTRONN2 shortcuts VoxelBoard does not have, and what to use instead
_NOT_HERE = {
    "sf": "sf (filter mosaics) is not available in VoxelBoard: use paramstats, or look at "
    "trainer.model's weights directly (e.g. trainer.model.state_dict())",
    "actstats": "actstats (activation statistics) is not available in VoxelBoard: use "
    "paramstats and gradstats, or register a forward hook on trainer.model",
}


class ShellCommandError(ValueError):
    """A shortcut with a missing or bad argument; the message is the hint to print."""


def _prompt() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in some containers
        user = "user"
    return f"{user}@{socket.gethostname()}: "


def banner(local_vars: MutableMapping[str, Any]) -> str:
    """The text shown on entering the shell and for ``help``."""
    cfg = getattr(local_vars.get("trainer"), "exp_config", None)
    name = "?" if cfg is None else cfg.save_name
    width = max(len(k) for k in SHORTCUTS)
    lines = [f"VoxelBoard shell - training '{name}' is paused.", "Shortcuts:"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in SHORTCUTS.items()]
    lines.append("Anything else runs as Python; names: " + ", ".join(sorted(_public(local_vars))))
    return "\n".join(lines)


def _public(local_vars: MutableMapping[str, Any]) -> list[str]:
    return [k for k in local_vars if not k.startswith("_")]


def _trainer(local_vars: MutableMapping[str, Any]) -> Any:
    trainer = local_vars.get("trainer", local_vars.get("self"))
    if trainer is None:
        raise ShellCommandError("no 'trainer' in this scope; shortcuts need one")
    return trainer


def _argument(parts: list[str], kind: type, usage: str) -> Any:
    if len(parts) != 2:
        raise ShellCommandError(f"usage: {usage}")
    try:
        value = kind(parts[1])
    except ValueError:
        raise ShellCommandError(
            f"usage: {usage} ({parts[1]!r} is not {'an int' if kind is int else 'a number'})"
        ) from None
    if kind is float and not math.isfinite(value):
        raise ShellCommandError(f"usage: {usage} (the value must be finite)")
    return value


def tensor_stats(named: list[tuple[str, Any]]) -> str:
    """A table of shape, mean, std, min, max and mean |x| for named tensors (``None`` = no value)."""
    rows = [
        f"{'name':<40} {'shape':<18} {'mean':>10} {'std':>10} {'min':>10} {'max':>10} {'|x|':>10}"
    ]
    for name, t in named:
        if t is None:
            rows.append(f"{name:<40} (none yet: no backward pass since the last reset)")
            continue
        t = t.detach().float()
        std = t.std().item() if t.numel() > 1 else 0.0
        rows.append(
            f"{name:<40} {str(tuple(t.shape)):<18} {t.mean().item():>10.3g} {std:>10.3g} "
            f"{t.min().item():>10.3g} {t.max().item():>10.3g} {t.abs().mean().item():>10.3g}"
        )
    return "\n".join(rows)


def load_weights(model: Any, path: str) -> str:
    """Load a snapshot (dict with ``'model'``) or a bare state_dict file into ``model``.

    Tries the safe ``weights_only`` loader first; snapshots that also hold numpy RNG state
    need the full loader, which is acceptable here because the user typed the path.
    """
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ShellCommandError(f"load: no such file: {path}") from None
    except pickle.UnpicklingError:
        state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ShellCommandError(f"load: {path} holds a {type(state).__name__}, not a state_dict")
    model.load_state_dict(state)
    return f"loaded {len(state)} tensors from {path}"


def run_shortcut(line: str, local_vars: MutableMapping[str, Any]) -> str | None:
    """Run one shortcut line; return what to print, or ``None`` if ``line`` is not a shortcut.

    Raises:
        ShellCommandError: missing or bad argument, or no trainer in scope.
    """
    parts = line.split()
    word = parts[0] if parts else ""
    if word == "help":
        return banner(local_vars)
    if word == "sethist":
        value = _argument(parts, int, "sethist <int>")
        if value <= 0:
            raise ShellCommandError("usage: sethist <int> (the value must be > 0)")
        _trainer(local_vars).exp_config.history_freq = value
        return f"history_freq = {value}"
    if word in _HYPER:
        key = _HYPER[word]
        value = _argument(parts, float, f"{word} <float>")
        optimizer = _trainer(local_vars).optimizer
        try:
            set_hyper(optimizer, key, value)
        except ValueError as e:
            raise ShellCommandError(str(e)) from None
        return f"{key} = {get_hyper(optimizer, key):g}"
    if word == "preview" and len(parts) == 1:
        trainer = _trainer(local_vars)
        trainer.preview_slice(**trainer.exp_config.preview_kwargs)
        return "preview done"
    if word in ("paramstats", "gradstats") and len(parts) == 1:
        model = _trainer(local_vars).model
        params = list(model.named_parameters())
        if word == "gradstats":
            params = [(n, p.grad) for n, p in params]
        return tensor_stats(params)
    if word == "debugbatch" and len(parts) == 1:
        result = _trainer(local_vars).debug_getcnnbatch()
        return "debug batch done" if result is None else f"debug batch done: {result}"
    if word in _NOT_HERE:
        return _NOT_HERE[word]
    if word == "load":
        if len(parts) != 2:
            raise ShellCommandError("usage: load <file.pt>")
        return load_weights(_trainer(local_vars).model, parts[1])
    if word == "ip" and len(parts) == 1:
        try:
            import IPython
        except ImportError:
            return "IPython is not installed; type Python directly here"
        IPython.embed(user_ns=local_vars)
        return ""
    return None


def user_input(
    local_vars: MutableMapping[str, Any],
    input_fn: Callable[[str], str] = input,
) -> str:
    """Run the interactive shell until the user leaves it; return the last command.

    Args:
        local_vars: the scope Python lines run in and shortcuts act on; shortcuts use
            ``local_vars['trainer']`` (``.exp_config``, ``.optimizer``, ``.model``,
            ``.preview_slice()``, ``.debug_getcnnbatch()``).
        input_fn: reads one line given a prompt; raises ``EOFError`` at the end of input
            (tests pass a scripted reader).

    Returns:
        ``'kill'`` if the user asked to stop training, ``'q'`` if the input ended, else the
        last command typed (``'q'``, ``'exit'``, ...).
    """
    console = code.InteractiveConsole(locals=local_vars)
    prompt = _prompt()
    print(banner(local_vars))
    more = False
    while True:
        try:
            line = input_fn("... " if more else prompt)
        except EOFError:
            print()
            return "q"
        except KeyboardInterrupt:
            console.resetbuffer()
            more = False
            print("\n(type 'q' to continue training, 'kill' to stop it)")
            continue
        command = line.strip()
        if not more:
            if command in _LEAVE:
                return command
            try:
                text = run_shortcut(command, local_vars)
            except ShellCommandError as e:
                print(e)
                continue
            except Exception:  # noqa: BLE001 - a failing command must not end the training
                traceback.print_exc(file=sys.stdout)
                print(f"'{command.split()[0]}' failed; the shell is still open")
                continue
            if text is not None:
                if text:
                    print(text)
                continue
        try:
            more = console.push(line)
        except SystemExit:
            # exit() from Python code leaves the shell instead of the training
            console.resetbuffer()
            return "q"
