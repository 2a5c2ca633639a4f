"""What the ``expllm`` sub-commands share: building an options object or calling a flow with the
command-line options it names."""

from __future__ import annotations

import argparse
import inspect
import os
from dataclasses import fields, is_dataclass
from typing import Any, get_args, get_type_hints


def from_args(target: Any, args: argparse.Namespace, /, **given: Any) -> Any:
    """``target(...)`` (a dataclass, function or Prefect flow) with every parameter that ``args``
    holds under the same name; ``given`` adds or overrides values."""
    if is_dataclass(target):
        names = [f.name for f in fields(target)]
    else:
        names = list(inspect.signature(getattr(target, "fn", target)).parameters)
    taken = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return target(**(taken | given))


def quiet_model_loading() -> None:
    """``--quiet`` reaches the Hugging Face libraries too: no bars for a GGUF file's conversion
    or a model's weights loading (the environment may still ask for them)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def add_field_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: type,
    options: tuple[tuple[str, str | None, str | None], ...],
    choices: dict[str, Any] | None = None,
) -> None:
    """Add ``options`` (flag, field of the dataclass ``config``, help) to ``parser``: each takes
    its default from the field and its type (int or float) from the field's annotation; ``None``
    for the field makes a plain text option; ``choices``: field -> the values it accepts."""
    hints = get_type_hints(config)
    defaults = {f.name: f.default for f in fields(config)}
    for flag, name, help_text in options:
        kinds = get_args(hints[name]) or (hints[name],) if name else ()
        number = [k for k in kinds if k in (int, float)]
        parser.add_argument(
            flag,
            default=defaults.get(name),
            type=number[0] if number else None,
            choices=(choices or {}).get(name),
            help=help_text,
        )
