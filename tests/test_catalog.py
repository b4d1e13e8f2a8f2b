"""sync_catalog: YAML and JSON, idempotent, updates in place, bad files change nothing."""

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from batches.catalog import CatalogError, sync_catalog
from batches.models import Filesystem, Image, Tool

ROOT = Path(__file__).resolve().parent.parent


def catalog_data(tmp_path: Path) -> dict[str, Any]:
    return {
        "tools": [
            {
                "name": "echo",
                "description": "Print a message",
                "command": ["/bin/echo", "{message}"],
                "parameters": {"message": {"type": "string", "required": True}},
            },
            {
                "name": "pick",
                "command": ["/bin/echo", "{colour}", "{times}"],
                "parameters": {
                    "colour": {"type": "choice", "choices": ["red", "green"], "default": "red"},
                    "times": {"type": "integer", "default": 1},
                },
                "timeout_seconds": 30,
            },
        ],
        "filesystems": [
            {"name": "scratch", "path": str(tmp_path / "scratch"), "read_only": False, "public": True},
            {"name": "lab", "path": str(tmp_path / "lab"), "users": ["alice"], "groups": ["biologists"]},
        ],
    }


def write(tmp_path: Path, data: Any, suffix: str = ".yaml") -> Path:
    path = tmp_path / f"catalog{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data), encoding="utf-8")
    return path


def sync(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("sync_catalog", str(path), *args, stdout=out)
    return out.getvalue()


def state() -> list[tuple]:
    tools = list(Tool.objects.order_by("name").values_list("pk", "name", "description", "command", "parameters", "timeout_seconds"))
    filesystems = list(Filesystem.objects.order_by("name").values_list("pk", "name", "path", "read_only", "public"))
    grants = list(Filesystem.users.through.objects.values_list("filesystem_id", "user_id"))
    return [tools, filesystems, sorted(grants), Group.objects.count()]


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_sync_creates_then_is_idempotent(alice, tmp_path, suffix):
    path = write(tmp_path, catalog_data(tmp_path), ".json" if suffix == ".json" else ".yaml")
    if suffix == ".yml":
        path = path.rename(path.with_suffix(".yml"))
    out = sync(path)
    assert "4 created, 0 updated, 0 unchanged" in out
    assert "created tool echo" in out and "created filesystem lab" in out
    pick = Tool.objects.get(name="pick")
    assert pick.command == ["/bin/echo", "{colour}", "{times}"] and pick.timeout_seconds == 30
    assert pick.parameters["colour"] == {"type": "choice", "required": False, "choices": ["red", "green"], "default": "red"}
    lab = Filesystem.objects.get(name="lab")
    assert list(lab.users.all()) == [alice] and [g.name for g in lab.groups.all()] == ["biologists"]
    assert (tmp_path / "lab").is_dir()
    before = state()
    again = sync(path)
    assert "0 created, 0 updated, 4 unchanged" in again
    assert state() == before


def test_sync_updates_in_place(alice, bob, tmp_path):
    data = catalog_data(tmp_path)
    sync(write(tmp_path, data))
    echo_id = Tool.objects.get(name="echo").pk
    lab_id = Filesystem.objects.get(name="lab").pk
    data["tools"][0]["description"] = "Say it"
    data["filesystems"][1]["users"] = ["bob"]
    out = sync(write(tmp_path, data))
    assert "0 created, 2 updated, 2 unchanged" in out
    assert "updated tool echo" in out and "updated filesystem lab" in out
    echo = Tool.objects.get(name="echo")
    assert echo.pk == echo_id and echo.description == "Say it"
    lab = Filesystem.objects.get(name="lab")
    assert lab.pk == lab_id and list(lab.users.all()) == [bob]


def test_demo_catalog_loads(db, tmp_path):
    data = yaml.safe_load((ROOT / "catalog" / "demo.yaml").read_text())
    for fs in data["filesystems"]:
        fs["path"] = str(tmp_path / fs["name"])
    out = sync(write(tmp_path, data))
    assert "6 created" in out  # four tools, a filesystem and the images
    assert set(Tool.objects.values_list("name", flat=True)) == {"echo", "sleep", "fail", "wc"}
    # The README's py-tes example names alpine: the host's system view (root null).
    assert list(Image.objects.values_list("pattern", "root")) == [("alpine*", "")]


def _tool(**overrides: Any) -> dict[str, Any]:
    tool = {"name": "bad", "command": ["/bin/echo", "{x}"], "parameters": {"x": {"type": "string"}}}
    tool.update(overrides)
    return tool


BAD = [
    (_tool(name="Not A Slug"), "tools[1]: name must be a slug"),
    (_tool(command="/bin/echo {x}"), "tool bad: command must be a non-empty list"),
    (_tool(command=["echo", "{x}"]), "tool bad: command[0] must be an absolute path"),
    (_tool(command=["/bin/echo", "{y}"]), "tool bad: command uses undeclared parameters: y"),
    (_tool(parameters={"x": {"type": "float"}}), "tool bad: parameter x: type must be one of"),
    (_tool(parameters={"x": {"type": "integer", "default": "one"}}), "tool bad: parameter x: default must be an integer"),
    (_tool(parameters={"x": {"type": "choice"}}), "tool bad: parameter x: a choice needs"),
    (_tool(parameters={"x": {"type": "string", "min": 1}}), "tool bad: parameter x: unknown keys ['min']"),
    (_tool(parameters={"1x": {"type": "string"}}), "tool bad: parameter name '1x'"),
    (_tool(colour="red"), "tools[1]: unknown keys ['colour']"),
    (_tool(timeout_seconds=0), "tool bad: timeout_seconds must be an integer from 1 to"),
    (_tool(name="echo"), "tool names appear twice: echo"),
    ("just a string", "tools[1]: must be a mapping"),
]


@pytest.mark.parametrize(("tool", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_tool_is_rejected_and_nothing_written(alice, tmp_path, tool, message):
    data = catalog_data(tmp_path)
    data["tools"].insert(1, tool)
    before = state()
    with pytest.raises(CommandError) as excinfo:
        sync(write(tmp_path, data))
    assert message in str(excinfo.value)
    assert state() == before
    assert not (tmp_path / "scratch").exists()


BAD_FS = [
    ({"name": "rel", "path": "relative/dir"}, "filesystem rel: path must be an absolute path"),
    ({"name": "who", "path": "/tmp/x", "users": ["nobody"]}, "no such users: nobody"),
    ({"name": "grp", "path": "/tmp/x", "groups": "biologists"}, "filesystem grp: groups must be a list"),
    ({"path": "/tmp/x"}, "filesystems[2]: name must be a slug"),
    ({"name": "size", "path": "/tmp/x", "quota": 5}, "filesystems[2]: unknown keys ['quota']"),
]


@pytest.mark.parametrize(("fs", "message"), BAD_FS, ids=[m for _, m in BAD_FS])
def test_bad_filesystem_is_rejected_and_nothing_written(alice, tmp_path, fs, message):
    data = catalog_data(tmp_path)
    data["filesystems"].append(fs)
    before = state()
    with pytest.raises(CommandError) as excinfo:
        sync(write(tmp_path, data))
    assert message in str(excinfo.value)
    assert state() == before


def test_bad_file_leaves_existing_entries_alone(alice, tmp_path):
    data = catalog_data(tmp_path)
    sync(write(tmp_path, data))
    before = state()
    data["tools"][0]["description"] = "changed"
    data["tools"].append(_tool(command="not a list"))
    with pytest.raises(CommandError, match="tool bad"):
        sync(write(tmp_path, data))
    assert state() == before


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("tools: [\n", ".yaml", "not valid YAML"),
        ("{tools: []}", ".json", "not valid JSON"),
        ("- a list\n", ".yaml", "the top level must be a mapping"),
        ("tools: []\nusers: []\n", ".yaml", "unknown top-level keys ['users']"),
    ],
)
def test_unreadable_files(db, tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(CommandError) as excinfo:
        sync(path)
    assert message in str(excinfo.value)
    assert not Tool.objects.exists()


def test_missing_file(db, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        sync(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tools": 5}, "tools must be a list of mappings, not int"),
        ({"filesystems": "scratch"}, "filesystems must be a list of mappings, not str"),
        ({"tools": {"name": "echo"}}, "tools must be a list of mappings, not dict"),
    ],
)
def test_a_malformed_section_is_a_clear_error_not_a_traceback(db, tmp_path, data, message):
    with pytest.raises(CommandError, match=message):
        sync(write(tmp_path, data, ".json"))


def test_a_missing_program_or_path_is_warned_about(db, tmp_path):
    data = {
        "tools": [{"name": "ghost", "command": ["/nonexistent/bin/ghost", "{x}"], "parameters": {"x": {"type": "string"}}}],
        "filesystems": [{"name": "gone", "path": str(tmp_path / "not-there"), "public": True}],
    }
    err = io.StringIO()
    call_command("sync_catalog", str(write(tmp_path, data)), "--no-create-dirs", stdout=io.StringIO(), stderr=err)
    assert "tool ghost: /nonexistent/bin/ghost is not an executable file on this machine" in err.getvalue()
    assert f"filesystem gone: {tmp_path / 'not-there'} is not a directory on this machine" in err.getvalue()
    assert Tool.objects.filter(name="ghost").exists(), "a warning, not a refusal: the program may exist on the workers"


@pytest.mark.parametrize(
    ("tools", "filesystems", "words"),
    [
        ([], [{"name": "fsx", "path": "/tmp/x", "public": "false"}], "public must be true or false"),
        ([], [{"name": "fsx", "path": "/tmp/x", "read_only": "false"}], "read_only must be true or false"),
        ([{"name": "t", "command": ["/bin/true"], "enabled": "false"}], [], "enabled must be true or false"),
        ([{"name": "t", "command": ["/bin/true"], "parameters": {"m": {"type": "string", "required": "no"}}}], [], "required"),
        ([{"name": "t", "command": ["/bin/true"], "description": None}], [], "description must be text"),
        ([{"name": "t", "command": ["/bin/true"], "timeout_seconds": 99999999999}], [], "timeout_seconds"),
        ([{"name": "t" * 65, "command": ["/bin/true"]}], [], "at most 64"),
        ([{"name": "t", "command": ["/bin/true"], "description": "d" * 501}], [], "at most 500"),
        ([{"name": "t", "command": ["/bin/true"], "parameters": {1: {"type": "string"}}}], [], "parameter name"),
        ([{"name": "t", "command": ["/bin/echo", "a\x00b"]}], [], "NUL"),
        ([], [{"name": "fsx", "path": "/tmp/a\x00b"}], "NUL"),
        ([], [{"name": "fsx", "path": "/" + "p" * 1000}], "at most"),
        ([{"name": "t", "command": ["/bin/true"], 1: "x"}], [], "unknown keys"),
    ],
)
def test_a_catalog_value_of_the_wrong_kind_is_named_not_guessed(db, tools, filesystems, words):
    """`public: "false"` made a filesystem every user could mount ("false" is a true
    string); `enabled: "false"` left a tool enabled; `required: "no"` made it required;
    an over-long name, an out-of-range timeout, a NUL, an integer key were tracebacks."""
    with pytest.raises(CatalogError, match=words):
        sync_catalog(data={"tools": tools, "filesystems": filesystems})
    assert not Filesystem.objects.exists() and not Tool.objects.exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe\x00junk", "not UTF-8"),
        (b"filesystems:\n  - {name: fsx, path: /etc/passwd/sub}\n", "cannot create"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),  # was a RecursionError traceback
    ],
)
def test_sync_catalog_command_says_what_is_wrong_in_one_line(db, tmp_path, content, words):
    from django.core.management import CommandError, call_command

    path = tmp_path / "catalog.yaml"
    path.write_bytes(content)
    with pytest.raises(CommandError, match=words):
        call_command("sync_catalog", str(path))


def test_sync_catalog_says_a_folder_is_not_a_catalog_file(db, tmp_path):
    """It said 'no such file' of a folder that exists."""
    with pytest.raises(CommandError, match="not a regular file"):
        call_command("sync_catalog", str(tmp_path))


def test_images_are_replaced_in_order_and_checked(db, tmp_path):
    """The catalog's `images` (GA4GH TES executors' image names to root filesystems):
    the file's list replaces the registered one, in its order; a root that holds no
    root filesystem, a relative one or a pattern given twice is refused and nothing is
    written."""
    from batches.images import UnknownImage, resolve_images
    from batches.models import Image

    root = tmp_path / "debian"
    (root / "usr").mkdir(parents=True)
    images = [{"pattern": "debian:bookworm", "root": str(root)}, {"pattern": "alpine*", "root": None}]
    report = sync_catalog(data={"images": images})
    assert report.created == ["images"]
    assert resolve_images(["alpine:3.19", "debian:bookworm"]) == {"alpine:3.19": None, "debian:bookworm": str(root)}
    assert isinstance(resolve_images(["ubuntu"])["ubuntu"], UnknownImage)
    assert "offered: debian:bookworm, alpine*" in str(resolve_images(["ubuntu"])["ubuntu"])
    assert sync_catalog(data={"images": images}).unchanged == ["images"]
    assert sync_catalog(data={"tools": []}).unchanged == []  # no images key: left alone
    assert Image.objects.count() == 2
    for bad, message in (
        ([{"pattern": "x", "root": str(tmp_path / "empty")}], "holds no root filesystem"),
        ([{"pattern": "x", "root": "relative"}], "must be an absolute directory"),
        ([{"pattern": "x", "root": None}, {"pattern": "x", "root": None}], "image patterns appear twice: x"),
        ([{"pattern": "", "root": None}], "images[0].pattern"),
        ([{"name": "x"}], "images[0]"),
    ):
        with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace("]", r"\]")):
            sync_catalog(data={"images": bad})
    assert list(Image.objects.values_list("pattern", flat=True)) == ["debian:bookworm", "alpine*"]
    sync_catalog(data={"images": []})
    assert Image.objects.count() == 0
