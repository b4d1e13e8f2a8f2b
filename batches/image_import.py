"""Unpacking an image for TES tasks' steps (`import_image`): a tar of a root filesystem
(what `mmdebstrap` or `docker export` writes), or an image archive (`docker save`'s, or
an OCI image layout in a tar), whose layers are applied in order with their whiteouts.
The catalog's `images` then names the directory (`batches.catalog`).

Members are extracted with the standard library's `tar` filter (no absolute names, no
`..` out of the directory, no setuid or group/other-writable bits) and without device
nodes or FIFOs (a step's sandbox has its own /dev). Links may point anywhere: they are
resolved inside the step's sandbox, whose root is the image. The directory is written
beside its final name and renamed into place, so a failed import leaves nothing half
made.
"""

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class ImageImportError(ValueError):
    """The archive cannot be imported; the message says why."""


@dataclass
class ImportReport:
    kind: str  # "root filesystem", "docker archive", "OCI layout"
    layers: int
    files: int


def import_image(*, archive: Path, root: Path, replace: bool = False) -> ImportReport:
    """Unpack `archive` (see the module) into the directory `root`, which must not
    exist unless `replace` (then the old one is removed once the new one is whole)."""
    root = root.absolute()
    if root.exists() and not replace:
        raise ImageImportError(f"{root} exists: give another directory, or --replace")
    if root == Path("/") or len(root.parts) < 3:
        raise ImageImportError(f"{root} is too near the top of the filesystem for an image; use e.g. /srv/images/NAME")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        with _open(archive) as outer:
            kind, layers = _layers(outer)
            files = 0
            for layer in layers:
                files += _apply(layer, work)
        if not (work / "usr").is_dir() and not (work / "bin").exists():
            raise ImageImportError(f"{archive} holds no root filesystem (no usr or bin at its top)")
        work.chmod(0o755)
        if root.exists():
            shutil.rmtree(root)
        work.rename(root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ImportReport(kind=kind, layers=len(layers), files=files)


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise ImageImportError(f"{path}: not a readable tar archive ({exc})") from None


def _layers(outer: tarfile.TarFile) -> tuple[str, list[tarfile.TarFile]]:
    names = set(outer.getnames())
    if "manifest.json" in names and "oci-layout" not in names:
        manifest = _json(outer, "manifest.json")
        if not isinstance(manifest, list) or not manifest or "Layers" not in manifest[0]:
            raise ImageImportError("manifest.json is not a docker image archive's (a list with Layers)")
        return "docker archive", [_inner(outer, name) for name in manifest[0]["Layers"]]
    if "oci-layout" in names and "index.json" in names:
        index = _json(outer, "index.json")
        try:
            digest = index["manifests"][0]["digest"]
            manifest = _json(outer, _blob(digest))
            if "manifests" in manifest:  # an index of platforms: the first
                manifest = _json(outer, _blob(manifest["manifests"][0]["digest"]))
            return "OCI layout", [_inner(outer, _blob(layer["digest"])) for layer in manifest["layers"]]
        except (KeyError, IndexError, TypeError) as exc:
            raise ImageImportError(f"index.json or a manifest is not an OCI image's ({exc!r} missing)") from None
    return "root filesystem", [outer]


def _blob(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"blobs/{algorithm}/{value}"


def _json(outer: tarfile.TarFile, name: str) -> object:
    handle = outer.extractfile(name)
    if handle is None:
        raise ImageImportError(f"{name} is not a file in the archive")
    return json.load(handle)


def _inner(outer: tarfile.TarFile, name: str) -> tarfile.TarFile:
    handle: IO[bytes] | None = outer.extractfile(name)
    if handle is None:
        raise ImageImportError(f"layer {name} is not in the archive")
    try:
        return tarfile.open(fileobj=handle, mode="r:*")
    except tarfile.TarError as exc:
        raise ImageImportError(f"layer {name} is not a tar ({exc})") from None


def _apply(layer: tarfile.TarFile, work: Path) -> int:
    """A layer's whiteouts first (they hide what lower layers made), then its members."""
    members = layer.getmembers()
    kept = []
    for member in members:
        base = os.path.basename(member.name.rstrip("/"))
        parent = work / os.path.dirname(member.name.lstrip("/"))
        if base == OPAQUE:
            _inside(work, parent / ".")
            if parent.is_dir() and not parent.is_symlink():
                for child in parent.iterdir():
                    _remove(child)
        elif base.startswith(WHITEOUT):
            target = parent / base[len(WHITEOUT) :]
            _inside(work, target)
            _remove(target)
        elif not (member.ischr() or member.isblk() or member.isfifo()):
            kept.append(member)
    for member in kept:
        name = _plain(member.name)
        _no_link_above(work, name)
        existing = work / name
        if existing.is_symlink() or (existing.exists() and not existing.is_dir()):
            existing.unlink()  # a later layer's file replaces an earlier one's
        if member.islnk():
            target = _plain(member.linkname)
            _no_link_above(work, target)
            if not (work / target).is_file() or (work / target).is_symlink():
                raise ImageImportError(f"{member.name}: a hard link to {member.linkname}, which is no file of the image")
        try:
            layer.extract(member, work, filter=_as_root)
        except (tarfile.FilterError, OSError) as exc:
            raise ImageImportError(f"cannot unpack {member.name}: {exc}") from None
    return len(kept)


def _plain(name: str) -> str:
    """A member's name inside the image: relative, without `.` or `..` parts."""
    parts = [part for part in name.strip("/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ImageImportError(f"{name}: .. is not allowed in a member's name")
    return "/".join(parts)


def _no_link_above(work: Path, name: str) -> None:
    """No directory above `name` in the image is a link: a member is never written (nor
    a hard link made) through one, whatever the link points at or how long the path."""
    here = work
    for part in name.split("/")[:-1]:
        here = here / part
        if here.is_symlink():
            raise ImageImportError(f"{name}: {here.relative_to(work)} above it is a link; members are not written through links")


def _as_root(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """The standard library's `tar` filter, and every file the root's: no file of an
    image is the job account's (or any tenant's) to change."""
    member = tarfile.tar_filter(member, path)
    return member.replace(uid=0, gid=0, uname="root", gname="root", deep=False)


def _resolves_inside(work: Path, folder: Path) -> bool:
    """True when `folder`, its links followed, is `work` or below it (an image's link
    may point anywhere on this host: nothing is removed through one)."""
    real = os.path.realpath(folder)
    return real == str(work) or real.startswith(str(work) + os.sep)


def _inside(work: Path, path: Path) -> None:
    if not _resolves_inside(work, path.parent) or os.path.basename(path) in ("", ".", ".."):
        raise ImageImportError(f"a whiteout points outside the image: {path}")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
