"""A config's model and data class, and snapshot files: how a run's parts are built and loaded.

The trainer, the evaluation (``trainer.evaluation``) and the command line build a config's
model and load its snapshots through these functions, so none of them imports the training
loop to do it.

Example:
    >>> from trainer.config import ExperimentConfig
    >>> cfg = ExperimentConfig("examples/demo_cnn3d.py")  # doctest: +SKIP
    >>> model = build_model(cfg)  # doctest: +SKIP
    >>> model.load_state_dict(load_snapshot("runs/demo/snapshots/FINAL.pt")["model"])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from trainer import runs

#: version of the snapshot layout ``trainer.callbacks.snapshots.save_snapshot`` writes
SNAPSHOT_FORMAT = 1


class SnapshotError(ValueError):
    """A snapshot file that cannot be loaded (truncated, overwritten, not a snapshot).

    Attributes:
        path: the snapshot file.
    """

    def __init__(self, path: Path, detail: str, hint: str):
        self.path = path
        super().__init__(f"{_snapshot_name(path)} is corrupt or truncated ({detail}): {hint}")


def load_snapshot(
    path: str | os.PathLike, map_location: Any = "cpu", hint: str | None = None
) -> dict:
    """Load a snapshot written by a run (``trainer.callbacks.snapshots``) or a plain state dict.

    Raises:
        FileNotFoundError: no such file.
        SnapshotError: the file is not a loadable snapshot; the message names the file and
            what to do (``hint``, default: pick another snapshot or re-train).
    """
    path = Path(path)
    hint = hint or "pick another snapshot with --snapshot, or re-train / --resume the run"
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch reports a damaged archive as RuntimeError, OSError, EOFError...
        raise SnapshotError(path, _first_line(e), hint) from e
    if not isinstance(state, dict):
        raise SnapshotError(path, f"holds a {type(state).__name__}, not a state dict", hint)
    return state


def _snapshot_name(path: Path) -> str:
    """``<run>/snapshots/LAST.pt`` for a run's snapshot, else the path as given."""
    if path.parent.name == runs.SNAPSHOT_DIR:
        return f"{path.parent.parent.name}/{runs.SNAPSHOT_DIR}/{path.name}"
    return str(path)


def _first_line(e: BaseException) -> str:
    """``Type: first sentence`` of an exception (torch appends paragraphs of advice)."""
    text = str(e).strip().splitlines()
    first = text[0].split(". ")[0].rstrip(".") if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def build_model(cfg: Any) -> torch.nn.Module:
    """The model of a config: ``create_model(model_load_args)`` (or ``create_model()``), checked.

    Raises:
        ValueError: the config has no ``create_model``.
        TypeError: it returned no ``torch.nn.Module``, or one without the geometry attributes
            (``patch_size``, ``offsets``, ``strides``, ``n_classes``) VoxelBoard needs.
    """
    create = cfg.create_model
    if create is None:
        raise ValueError(
            f"{cfg.exp_file}: one of 'create_model' or 'model_load_path' must be given"
        )
    args = cfg.model_load_args
    model = create(args) if args is not None else create()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"create_model in {cfg.exp_file} returned {type(model).__name__}; "
            "it must return a torch.nn.Module"
        )
    for attr in ("patch_size", "offsets", "strides", "n_classes"):
        if not hasattr(model, attr):
            raise TypeError(
                f"the model from create_model in {cfg.exp_file} has no attribute {attr!r}; "
                "VoxelBoard models declare patch_size, offsets, strides and n_classes "
                "(see trainer.models.CNN3D)"
            )
    return model


def initial_model(cfg: Any) -> torch.nn.Module:
    """The model a run starts from: ``model_load_path`` (a whole model, or a state dict loaded
    into ``build_model(cfg)``), else ``build_model(cfg)``.

    Raises:
        ValueError: ``model_load_path`` holds a state dict and the config has no
            ``create_model`` to build the model it belongs to.
    """
    load_path = cfg.model_load_path
    if not load_path:
        return build_model(cfg)
    state = torch.load(os.path.expanduser(load_path), map_location="cpu", weights_only=False)
    if isinstance(state, torch.nn.Module):
        return state
    if cfg.create_model is None:
        raise ValueError(
            f"model_load_path {load_path!r} holds a state dict, not a model; "
            "also give create_model so VoxelBoard can build the model to load it into"
        )
    model = build_model(cfg)
    model.load_state_dict(state.get("model", state))
    return model


def resolve_data_class(spec: Any) -> type:
    """The data class a config names: a class of ``trainer.data`` / ``trainer.tracing_data`` by
    name, or a ``(file, class name)`` pair.

    Raises:
        ValueError: no such class (the message says what a config may give).
    """
    if isinstance(spec, str):
        for name in ("trainer.data", "trainer.tracing_data"):
            module = importlib.import_module(name)
            if isinstance(getattr(module, spec, None), type):
                return getattr(module, spec)
        raise ValueError(
            f"data_class {spec!r} is not a VoxelBoard data class; use 'BatchCreatorImage', "
            "'AgentData' (tracing) or a (file, class name) pair for your own class"
        )
    path, name = spec
    path = os.path.expanduser(path)
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"data_class file {path!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"data_class file {path!r} has no class {name!r}") from None
