"""Jobs from the command line and from files, typed as the tool's parameters take
them: `--arg KEY=VALUE`, `--sweep KEY=V1,V2` and `--from-file` (.csv or .jsonl)."""

import csv
import io
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import click


def pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    """`KEY=VALUE` words as (key, value); anything else is a usage error naming `option`."""
    found = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        found.append((key, rest))
    return found


def jobs_from_file(path: Path) -> list[dict[str, Any]]:
    """The jobs' arguments in a .csv file (a header row of keys, a job per row) or a
    .jsonl file (an object per line); a file with no jobs, not UTF-8, or with rows that
    do not fit their header is a usage error naming the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is no part of the first key
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", param_hint="--from-file") from None
    jobs: list[dict[str, Any]]
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise click.BadParameter(f"{path}: the header names {', '.join(twice)} more than once", param_hint="--from-file")
        jobs = []
        for row in reader:
            if None in row:
                raise click.BadParameter(f"{path}: line {reader.line_num} has more fields than the header", param_hint="--from-file")
            if None in row.values():
                raise click.BadParameter(f"{path}: line {reader.line_num} has fewer fields than the header", param_hint="--from-file")
            jobs.append(dict(row))
    else:
        jobs = _jobs_from_jsonl(path, text)
    if not jobs:
        raise click.BadParameter(f"no jobs in {path}", param_hint="--from-file")
    return jobs


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")  # Python's json takes NaN and Infinity


def _jobs_from_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line, parse_constant=_not_json)
        except ValueError as exc:
            raise click.BadParameter(f"{path}:{number}: not JSON ({exc})", param_hint="--from-file") from None
        if not isinstance(item, dict):
            raise click.BadParameter(f"{path}:{number}: not an object", param_hint="--from-file")
        jobs.append(item["args"] if isinstance(item.get("args"), dict) else item)
    return jobs


_INTEGER = re.compile(r"^-?[0-9]+$")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


def _typed(key: str, value: Any, parameters: dict[str, Any]) -> Any:
    """A value typed on the command line or in a CSV file, as the tool's parameter
    `key` takes it (JSON numbers and booleans); JSON lines keep their own types."""
    kind = parameters.get(key, {}).get("type")
    if not isinstance(value, str) or kind not in ("integer", "number", "boolean"):
        return value
    if kind == "boolean":
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if value.lower() in words:
            return words[value.lower()]
        raise click.BadParameter(f"{key}: {value!r} is not a boolean (true or false)")
    # JSON's own shapes (int() and float() also take "1_000", " 5", "nan" and "inf").
    if _INTEGER.match(value):
        if len(value.lstrip("-")) > 4000:
            raise click.BadParameter(f"{key}: an integer of {len(value)} digits is too long")
        return int(value)
    if kind == "integer":
        raise click.BadParameter(f"{key}: {value!r} is not an integer")
    number = float(value) if _NUMBER.match(value) else math.nan
    if not math.isfinite(number):
        raise click.BadParameter(f"{key}: {value!r} is not a finite number")
    return number


def build_jobs(
    args: list[tuple[str, str]], sweeps: list[tuple[str, str]], rows: list[dict[str, Any]], parameters: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One job per row of the file (or one job), times every combination of the sweeps;
    `--arg` values apply to all. Values are typed by the tool's `parameters`."""
    swept = [key for key, _ in sweeps]
    twice = sorted({key for key in swept if swept.count(key) > 1})
    if twice:
        raise click.BadParameter(f"{', '.join(twice)} swept more than once: give all its values in one --sweep", param_hint="--sweep")
    fixed = dict(args)
    combinations = [
        dict(zip([k for k, _ in sweeps], values, strict=True)) for values in itertools.product(*[v.split(",") for _, v in sweeps])
    ]
    jobs = [{**fixed, **row, **combo} for row in (rows or [{}]) for combo in combinations]
    return [{"args": {key: _typed(key, value, parameters or {}) for key, value in job.items()}} for job in jobs]
