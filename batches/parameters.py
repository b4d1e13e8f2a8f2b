"""Tool parameters: their declared types, and checking one job's arguments against them.

A parameter spec is `{"type": ..., "required": bool, "default": value, "choices": [...],
"description": str}`. Types: string, integer, number, boolean, choice, path. A checked
argument becomes the string the program receives on its command line, so what a job
shows in `args` is exactly what ran.
"""

import math
import os
import re
from collections.abc import Iterable
from typing import Any

TYPES = ("string", "integer", "number", "boolean", "choice", "path")
SPEC_KEYS = {"type", "required", "default", "choices", "description"}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_STRING = 65536
MAX_NAMED_UNKNOWN = 10  # unknown argument names reported per job
JOB_ARGS = ""  # the key of an error about a job's arguments as a whole (no argument is named "")


class ArgumentError(ValueError):
    """One argument is wrong; the message says how, in words a user can act on."""


def check_spec(name: str, spec: Any) -> dict[str, Any]:
    """Validate one declared parameter (catalog side); return it normalised."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"parameter name {name!r} must be letters, digits and _ (not starting with a digit)")
    if not isinstance(spec, dict):
        raise ValueError(f"parameter {name}: expected a mapping, got {type(spec).__name__}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"parameter {name}: unknown keys {sorted(unknown)}")
    kind = spec.get("type", "string")
    if kind not in TYPES:
        raise ValueError(f"parameter {name}: type must be one of {', '.join(TYPES)}, not {kind!r}")
    required = spec.get("required", "default" not in spec)
    if not isinstance(required, bool):
        raise ValueError(f"parameter {name}: required must be true or false, not {required!r}")
    out: dict[str, Any] = {"type": kind, "required": required}
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"parameter {name}: description must be text, not {description!r}")
    if description:
        if "\x00" in description:
            raise ValueError(f"parameter {name}: description must not contain a NUL character")
        out["description"] = description
    if kind == "choice":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
            raise ValueError(f"parameter {name}: a choice needs a non-empty list of string choices")
        out["choices"] = choices
    elif "choices" in spec:
        raise ValueError(f"parameter {name}: only a choice parameter takes choices")
    if "default" in spec:
        try:
            convert(spec["default"], out, filesystem_roots=None)
        except ArgumentError as exc:
            raise ValueError(f"parameter {name}: default {exc}") from None
        out["default"] = spec["default"]
    return out


def check_command(command: Any, parameters: dict[str, Any]) -> list[str]:
    """Validate an argv template against the declared parameters."""
    if not isinstance(command, list) or not command or not all(isinstance(part, str) for part in command):
        raise ValueError("command must be a non-empty list of strings (an argv, never a shell string)")
    if any("\x00" in part for part in command):
        raise ValueError("command must not contain a NUL character (no program can receive one)")
    if not os.path.isabs(command[0]):
        raise ValueError(f"command[0] must be an absolute path to the program, not {command[0]!r}")
    used = {m for part in command for m in PLACEHOLDER_RE.findall(part)}
    undeclared = used - set(parameters)
    if undeclared:
        raise ValueError(f"command uses undeclared parameters: {', '.join(sorted(undeclared))}")
    return command


def convert(value: Any, spec: dict[str, Any], *, filesystem_roots: Iterable[str] | None) -> str:
    """Check `value` against `spec` and return it as the program's argv string.

    `filesystem_roots` are the batch's filesystem paths for `path` parameters; None skips
    the containment check (used when validating catalog defaults).
    """
    kind = spec["type"]
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ArgumentError(f"must be true or false, not {_describe(value)}")
        return "true" if value else "false"
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(f"must be an integer, not {_describe(value)}")
        return str(value)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentError(f"must be a number, not {_describe(value)}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond any float: no program reads it as a number
            finite = False
        if not finite:
            raise ArgumentError("must be a finite number within ±1.8e308")
        return repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        raise ArgumentError(f"must be a string, not {_describe(value)}")
    if "\x00" in value:
        raise ArgumentError("must not contain a NUL character")
    if len(value) > MAX_STRING:
        raise ArgumentError(f"must be at most {MAX_STRING} characters")
    if kind == "choice" and value not in spec["choices"]:
        raise ArgumentError(f"must be one of {', '.join(spec['choices'])}, not {value!r}")
    if kind == "path" and filesystem_roots is not None:
        return check_path(value, filesystem_roots)
    return value


def argument_types(parameters: dict[str, Any]) -> dict[str, str]:
    """Each parameter's type, as a batch keeps them to show its jobs' arguments."""
    return {name: spec.get("type", "string") for name, spec in parameters.items()}


def as_sent(text: str, kind: str | None) -> Any:
    """The JSON value a user sent for an argument whose program string is `text`: the
    inverse of `convert` for a parameter of type `kind` (integers as int, numbers as int
    or float as they came, booleans as bool, the rest as the string). A string that is
    not of that type (no type known) is given back unchanged."""
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    if kind not in ("integer", "number"):
        return text
    # convert() writes an int as its digits and a float by repr (with '.' or 'e'): only
    # a string it could have written is read back.
    for read, write in ((int, str), (float, repr)) if kind == "number" else ((int, str),):
        try:
            value = read(text)
        except ValueError:
            continue
        if write(value) == text:
            return value
    return text


def check_path(value: str, filesystem_roots: Iterable[str]) -> str:
    """An absolute path that resolves (symlinks followed) inside one of the roots."""
    if not os.path.isabs(value):
        raise ArgumentError(f"must be an absolute path inside one of the batch's filesystems, not {value!r}")
    resolved = os.path.realpath(value)
    for root in filesystem_roots:
        real_root = os.path.realpath(root)
        if resolved == real_root or resolved.startswith(real_root.rstrip("/") + "/"):
            return value
    raise ArgumentError(f"{value!r} is not inside any of the batch's filesystems")


def resolve_arguments(args: Any, parameters: dict[str, Any], *, filesystem_roots: list[str]) -> dict[str, str]:
    """Check one job's arguments; return every parameter's argv string (defaults filled).

    Raises a dict {argument name: message} naming every wrong argument.
    """
    if not isinstance(args, dict):
        raise ArgumentsInvalid({JOB_ARGS: f"must be an object of argument values, not {_describe(args)}"})
    errors: dict[str, str] = {}
    unknown = [name for name in args if name not in parameters]
    if unknown:
        known = ", ".join(sorted(parameters)) or "none"
        for name in unknown[:MAX_NAMED_UNKNOWN]:
            errors[name] = f"unknown argument (this tool takes: {known})"
        if len(unknown) > MAX_NAMED_UNKNOWN:  # the answer stays small whatever was sent
            errors[JOB_ARGS] = f"{len(unknown)} unknown arguments, the first {MAX_NAMED_UNKNOWN} named (this tool takes: {known})"
    resolved: dict[str, str] = {}
    for name, spec in parameters.items():
        if name in args:
            try:
                resolved[name] = convert(args[name], spec, filesystem_roots=filesystem_roots)
            except ArgumentError as exc:
                errors[name] = str(exc)
        elif "default" in spec:
            # A default is held to the rules of a given value: a path default must lie
            # inside one of this batch's filesystems like any other path.
            try:
                resolved[name] = convert(spec["default"], spec, filesystem_roots=filesystem_roots)
            except ArgumentError as exc:
                errors[name] = f"the default {exc}: give a value, or add the filesystem that holds it to the batch"
        elif spec.get("required", True):
            errors[name] = "this argument is required"
    if errors:
        raise ArgumentsInvalid(errors)
    return resolved


class ArgumentsInvalid(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def render_argv(command: list[str], args: dict[str, str]) -> list[str]:
    """Replace `{name}` placeholders with argument strings. Each value lands inside one
    argv element, literally: nothing is split, globbed or expanded. `{{`/`}}` escape."""

    def substitute(part: str) -> str:
        out = []
        pos = 0
        while pos < len(part):
            if part.startswith("{{", pos) or part.startswith("}}", pos):
                out.append(part[pos])
                pos += 2
                continue
            match = PLACEHOLDER_RE.match(part, pos)
            if match:
                out.append(args.get(match.group(1), ""))
                pos = match.end()
                continue
            out.append(part[pos])
            pos += 1
        return "".join(out)

    return [substitute(part) for part in command]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
