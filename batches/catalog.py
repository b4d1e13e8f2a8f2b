"""The catalog file: tools, filesystems and images declared in YAML or JSON (DESIGN.md).

`sync_catalog()` checks the whole file first and then creates or updates every entry by
name in one transaction, so a bad file changes nothing and running it twice changes
nothing the second time. Tools and filesystems missing from the file are left alone;
`images` (a list of `{"pattern", "root"}`, tried in order) replaces the registered list
when the file has the key.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils.text import slugify

from batches.models import Filesystem, Image, Tool
from batches.parameters import check_command, check_spec

TOOL_KEYS = {"name", "description", "command", "parameters", "timeout_seconds", "enabled"}
FS_KEYS = {"name", "description", "path", "read_only", "public", "users", "groups"}
IMAGE_KEYS = {"pattern", "root"}


class CatalogError(ValueError):
    """The file is wrong; the message names the entry and the problem."""


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # saved all the same, but likely to fail jobs

    def __str__(self) -> str:
        return f"{len(self.created)} created, {len(self.updated)} updated, {len(self.unchanged)} unchanged"


def load_catalog_file(path: Path) -> dict[str, Any]:
    """Parse a .yaml/.yml or .json file into a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    except RecursionError:
        raise CatalogError(f"{path}: nested too deeply to be a catalog") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: the top level must be a mapping with tools and filesystems")
    return data


def _checked_name(section: str, index: int, entry: Any, keys: set[str]) -> str:
    """The entry's name, after checking it is a mapping with only `keys`."""
    where = f"{section}[{index}]"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be a mapping")
    unknown = set(entry) - keys
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name or slugify(name) != name:
        raise CatalogError(f"{where}: name must be a slug (letters, digits, - and _), not {name!r}")
    _fits(where, "name", name, Tool._meta.get_field("name").max_length)
    return name


def _fits(where: str, key: str, value: str, longest: int) -> str:
    """`value` as a column of at most `longest` characters takes it (no NUL)."""
    if "\x00" in value:
        raise CatalogError(f"{where}: {key} must not contain a NUL character")
    if len(value) > longest:
        raise CatalogError(f"{where}: {key} must be at most {longest} characters, not {len(value)}")
    return value


def _text(where: str, entry: dict[str, Any], key: str, longest: int) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise CatalogError(f"{where}: {key} must be text, not {value!r}")
    return _fits(where, key, value, longest)


def _flag(where: str, entry: dict[str, Any], key: str, default: bool) -> bool:
    """A true/false setting: never a string's truth ("false" is a true string)."""
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise CatalogError(f"{where}: {key} must be true or false, not {value!r}")
    return value


class ToolError(ValueError):
    """What is wrong with a tool, per field ("command", "parameters"); its message says
    all of it."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors.values()))


def check_tool(*, command: Any, parameters: Any) -> tuple[list[str], dict[str, Any]]:
    """The one check of a tool's argv template and parameters, whoever writes the tool
    (the catalog file, the admin's form): returns them normalised, or raises ToolError
    saying what is wrong with each. A tool that passes can be listed and run."""
    errors: dict[str, str] = {}
    checked: dict[str, Any] = {}
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        errors["parameters"] = "parameters must be a mapping of name -> {type, required, default, choices, description}"
        parameters = {}
    try:
        checked = {pname: check_spec(pname, spec) for pname, spec in parameters.items()}
    except ValueError as exc:
        errors["parameters"] = str(exc)
    try:
        # Against the declared names, even when a declaration is wrong: both fields'
        # problems are told at once.
        command = check_command(command, dict.fromkeys(parameters))
    except ValueError as exc:
        errors["command"] = str(exc)
    if errors:
        raise ToolError(errors)
    return command, checked


def check_path_setting(path: Any) -> str:
    """A filesystem's path, whoever writes it (the catalog file, the admin's form): an
    absolute path that fits its column, with no NUL; returned normalised (`/a/../b` is
    `/b`), which is how it is compared with the paths jobs are given."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(f"path must be an absolute path, not {path!r}")
    longest = Filesystem._meta.get_field("path").max_length
    if "\x00" in path:
        raise ValueError("path must not contain a NUL character")
    if len(path) > longest:
        raise ValueError(f"path must be at most {longest} characters, not {len(path)}")
    return os.path.normpath(path)


def check_timeout(timeout: Any) -> None:
    """A tool's own wall-clock limit: none (the default), or 1 to the configured maximum;
    the catalog file and the admin's form alike."""
    longest = settings.BATCHES_MAX_TIMEOUT_SECONDS
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= longest):
        raise ValueError(f"timeout_seconds must be an integer from 1 to {longest} (BATCHES_MAX_TIMEOUT_SECONDS), or none")


def _clean_tool(index: int, entry: Any) -> dict[str, Any]:
    name = _checked_name("tools", index, entry, TOOL_KEYS)
    where = f"tool {name}"
    try:
        command, parameters = check_tool(command=entry.get("command"), parameters=entry.get("parameters") or {})
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    timeout = entry.get("timeout_seconds")
    try:
        check_timeout(timeout)
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    return {
        "name": name,
        "description": _text(where, entry, "description", Tool._meta.get_field("description").max_length),
        "command": command,
        "parameters": parameters,
        "timeout_seconds": timeout,
        "enabled": _flag(where, entry, "enabled", True),
    }


def _clean_filesystem(index: int, entry: Any) -> dict[str, Any]:
    name = _checked_name("filesystems", index, entry, FS_KEYS)
    where = f"filesystem {name}"
    try:
        path = check_path_setting(entry.get("path"))
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    users = entry.get("users") or []
    groups = entry.get("groups") or []
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise CatalogError(f"{where}: users must be a list of user names")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise CatalogError(f"{where}: groups must be a list of group names")
    for group in groups:
        _fits(where, "a group name", group, Group._meta.get_field("name").max_length)
    return {
        "name": name,
        "description": _text(where, entry, "description", Filesystem._meta.get_field("description").max_length),
        "path": path,
        "read_only": _flag(where, entry, "read_only", False),
        "public": _flag(where, entry, "public", False),
        "users": users,
        "groups": groups,
    }


def _upsert(model: type, values: dict[str, Any]) -> tuple[Any, bool, bool]:
    """Create or update the row named values["name"]: (row, created, changed)."""
    obj = model.objects.filter(name=values["name"]).first()
    if obj is None:
        return model.objects.create(**values), True, False
    changed = [key for key, value in values.items() if getattr(obj, key) != value]
    for key in changed:
        setattr(obj, key, values[key])
    if changed:
        obj.save(update_fields=changed)
    return obj, False, bool(changed)


def _set_grants(fs: Filesystem, users: list[Any], groups: list[Group]) -> bool:
    """Replace the filesystem's grants; True if they changed."""
    before = (set(fs.users.values_list("pk", flat=True)), set(fs.groups.values_list("pk", flat=True)))
    after = ({u.pk for u in users}, {g.pk for g in groups})
    if before == after:
        return False
    fs.users.set(users)
    fs.groups.set(groups)
    return True


def sync_catalog(*, data: dict[str, Any], create_dirs: bool = True) -> SyncReport:
    """Create or update the tools and filesystems of `data` (see module docstring).

    Filesystem grants are replaced by the file's `users` and `groups` lists; groups are
    created when missing, users must exist. With `create_dirs`, a filesystem's path is
    created when it does not exist yet.
    """
    unknown = set(data) - {"tools", "filesystems", "images"}
    if unknown:
        raise CatalogError(f"unknown top-level keys {sorted(unknown)}; expected tools, filesystems and images")
    images = [_clean_image(i, entry) for i, entry in enumerate(_section(data, "images"))] if "images" in data else None
    tools = [_clean_tool(i, entry) for i, entry in enumerate(_section(data, "tools"))]
    filesystems = [_clean_filesystem(i, entry) for i, entry in enumerate(_section(data, "filesystems"))]
    for kind, entries in (("tool", tools), ("filesystem", filesystems)):
        names = [entry["name"] for entry in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise CatalogError(f"{kind} names appear twice: {', '.join(dupes)}")
    patterns = [image["pattern"] for image in images or []]
    if len(set(patterns)) != len(patterns):
        raise CatalogError(f"image patterns appear twice: {', '.join(sorted({p for p in patterns if patterns.count(p) > 1}))}")
    user_model = get_user_model()
    wanted_users = {u for fs in filesystems for u in fs["users"]}
    found = {u.get_username(): u for u in user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": wanted_users})}
    missing = sorted(wanted_users - set(found))
    if missing:
        raise CatalogError(f"no such users: {', '.join(missing)} (create them first, e.g. issue_token --create-user)")

    report = SyncReport()

    def record(label: str, created: bool, changed: bool) -> None:
        (report.created if created else report.updated if changed else report.unchanged).append(label)

    with transaction.atomic():
        for values in tools:
            _, created, changed = _upsert(Tool, values)
            record(f"tool {values['name']}", created, changed)
        for values in filesystems:
            users = [found[u] for u in values.pop("users")]
            groups = [Group.objects.get_or_create(name=g)[0] for g in values.pop("groups")]
            fs, created, changed = _upsert(Filesystem, values)
            granted = _set_grants(fs, users, groups)
            record(f"filesystem {values['name']}", created, changed or (granted and not created))
            if create_dirs:
                try:
                    Path(values["path"]).mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # nothing is saved: the transaction rolls back
                    raise CatalogError(f"filesystem {values['name']}: cannot create {values['path']}: {exc.strerror}") from None
        if images is not None:
            _replace_images(images, record)
    for values in tools:
        program = values["command"][0]
        if program.startswith("/") and not (Path(program).is_file() and os.access(program, os.X_OK)):
            report.warnings.append(f"tool {values['name']}: {program} is not an executable file on this machine")
    for values in filesystems:
        if not Path(values["path"]).is_dir():
            report.warnings.append(f"filesystem {values['name']}: {values['path']} is not a directory on this machine")
    return report


def _clean_image(index: int, entry: Any) -> dict[str, Any]:
    where = f"images[{index}]"
    if not isinstance(entry, dict) or set(entry) - IMAGE_KEYS or "pattern" not in entry:
        raise CatalogError(f'{where}: must be a mapping with "pattern" and "root" (a directory, or null for the host system)')
    pattern, root = entry["pattern"], entry.get("root")
    if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > 300:
        raise CatalogError(f"{where}.pattern: must be an image name or pattern of 1 to 300 characters")
    if root is not None and (not isinstance(root, str) or not os.path.isabs(root) or os.path.normpath(root) in ("/",)):
        raise CatalogError(f"{where}.root: must be an absolute directory other than / (or null for the host system)")
    if root is not None and not Path(root, "bin").exists() and not Path(root, "usr").is_dir():
        raise CatalogError(f"{where}.root: {root} holds no root filesystem (no bin or usr): unpack an image there first")
    return {"pattern": pattern, "root": os.path.normpath(root) if root else ""}


def _replace_images(images: list[dict[str, Any]], record: Any) -> None:
    before = list(Image.objects.values_list("pattern", "root", "position"))
    after = [(image["pattern"], image["root"], position) for position, image in enumerate(images)]
    if before == after:
        record("images", False, False)
        return
    Image.objects.all().delete()
    Image.objects.bulk_create(Image(pattern=p, root=r, position=n) for p, r, n in after)
    record("images", not before, bool(before))


def _section(data: dict[str, Any], key: str) -> list[Any]:
    """`data[key]`: a list of entries (missing or empty: none)."""
    entries = data.get(key) or []
    if not isinstance(entries, list):
        raise CatalogError(f"{key} must be a list of mappings, not {type(entries).__name__}")
    return entries
