"""Images for TES tasks (issue 23): `import_image` unpacks a root filesystem tar, a
`docker save` archive (layers and whiteouts) or an OCI layout, refusing what would
write outside its directory; and a task whose image maps to a real Debian root
filesystem sees that system, not the host's. The last one needs a root filesystem tar
built by `mmdebstrap` (BATCHES_TEST_ROOTFS_TAR, which .ci/run makes): without it it
skips with the reason, or fails with BATCHES_REQUIRE_IMAGES=1 (CI)."""

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from django.core.management import call_command

from batches.image_import import ImageImportError, import_image

pytestmark = pytest.mark.django_db


def _tar(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A tar of (name, file content or None for a directory, symlink target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


BASE = _tar(
    [
        ("usr", None, None),
        ("usr/bin", None, None),
        ("bin", None, "usr/bin"),
        ("etc", None, None),
        ("etc/os-release", b"ID=base\n", None),
        ("etc/old", b"old\n", None),
        ("opt", None, None),
        ("opt/a", b"a\n", None),
    ]
)
TOP = _tar([("etc/.wh.old", b"", None), ("opt/.wh..wh..opq", b"", None), ("opt/b", b"b\n", None), ("etc/os-release", b"ID=top\n", None)])


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _check_layers_applied(root: Path) -> None:
    assert (root / "etc/os-release").read_text() == "ID=top\n"
    assert not (root / "etc/old").exists()  # whited out
    assert sorted(os.listdir(root / "opt")) == ["b"]  # opaque: the lower layer's a is gone
    assert os.readlink(root / "bin") == "usr/bin"


def test_a_docker_archive_is_unpacked_layer_by_layer(tmp_path):
    archive = _archive(
        tmp_path / "image.tar",
        {
            "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode(),
            "l1/layer.tar": BASE,
            "l2/layer.tar": TOP,
        },
    )
    report = import_image(archive=archive, root=tmp_path / "images" / "x")
    assert (report.kind, report.layers) == ("docker archive", 2)
    _check_layers_applied(tmp_path / "images" / "x")


def test_an_oci_layout_is_unpacked(tmp_path):
    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    manifest = json.dumps({"layers": [{"digest": digest(BASE)}, {"digest": digest(TOP)}]}).encode()
    index = json.dumps({"manifests": [{"digest": digest(manifest)}]}).encode()
    blobs = {f"blobs/sha256/{digest(d)[7:]}": d for d in (BASE, TOP, manifest)}
    archive = _archive(tmp_path / "oci.tar", {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index, **blobs})
    assert import_image(archive=archive, root=tmp_path / "images" / "oci").kind == "OCI layout"
    _check_layers_applied(tmp_path / "images" / "oci")


def test_a_root_filesystem_tar_and_the_command(tmp_path):
    archive = tmp_path / "rootfs.tar"
    archive.write_bytes(BASE)
    out = io.StringIO()
    call_command("import_image", str(archive), str(tmp_path / "images" / "plain"), stdout=out)
    assert "root filesystem, 1 layer(s)" in out.getvalue()
    assert (tmp_path / "images" / "plain" / "etc/os-release").read_text() == "ID=base\n"
    with pytest.raises(Exception, match="exists"):
        call_command("import_image", str(archive), str(tmp_path / "images" / "plain"))
    call_command("import_image", str(archive), str(tmp_path / "images" / "plain"), "--replace", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("usr", None, None), ("../escape", b"x", None)], ".. is not allowed"),
        ([("usr", None, None), ("/etc/passwd", b"x", None)], None),  # the leading / is stripped: it stays inside
        ([("usr", None, None), ("lib", None, "/tmp"), ("lib/file", b"x", None)], "above it is a link"),
        ([("etc", None, None)], "holds no root filesystem"),
    ],
)
def test_nothing_is_written_outside_the_directory(tmp_path, entries, message):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar(entries))
    root = tmp_path / "images" / "bad"
    if message is None:
        import_image(archive=archive, root=root)
        assert (root / "etc/passwd").read_bytes() == b"x"
        return
    with pytest.raises(ImageImportError, match=message):
        import_image(archive=archive, root=root)
    assert not root.exists() and os.listdir(tmp_path / "images") == []
    assert not Path("/tmp/file").exists() or Path("/tmp/file").read_bytes() != b"x"


def test_a_task_in_a_debian_root_filesystem_sees_that_system(alice, settings):
    rootfs = os.environ.get("BATCHES_TEST_ROOTFS_TAR")
    if not rootfs:
        message = "BATCHES_TEST_ROOTFS_TAR is not set (a root filesystem tar from mmdebstrap; .ci/run makes one)"
        if os.environ.get("BATCHES_REQUIRE_IMAGES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from accounts.capabilities import allow_commands
    from batches.catalog import sync_catalog
    from jobs.models import Job
    from tests.conftest import make_client
    from tests.test_isolation import sealed_isolation
    from tests.worker_helpers import drive, in_process_loop

    base = Path(tempfile.mkdtemp(prefix="batches-images-"))
    base.chmod(0o755)
    call_command("import_image", rootfs, str(base / "debian-bookworm"), stdout=io.StringIO())
    sync_catalog(
        data={"images": [{"pattern": "debian:bookworm", "root": str(base / "debian-bookworm")}, {"pattern": "alpine*", "root": None}]}
    )
    allow_commands(user=alice)
    client = make_client(alice)
    loop = in_process_loop(isolation=sealed_isolation(), grace=0.5)
    try:
        look = ["sh", "-c", "cat /etc/os-release; test -e /usr/bin/python3 && echo python: yes || echo python: no"]
        ids = [
            client.post("/ga4gh/tes/v1/tasks", {"executors": [{"image": image, "command": look}]}, format="json").json()["id"]
            for image in ("debian:bookworm", "alpine")
        ]
        drive(loop, lambda: all(Job.objects.get(batch_id=i).status in ("SUCCEEDED", "FAILED") for i in ids), timeout=60)
    finally:
        loop.stop()
    image, host = (client.get(f"/ga4gh/tes/v1/tasks/{i}?view=FULL").json() for i in ids)
    assert image["state"] == "COMPLETE", image
    seen = image["logs"][0]["logs"][0]["stdout"]
    assert seen == (base / "debian-bookworm/etc/os-release").read_text() + "python: no\n"  # minbase has no Python
    assert host["logs"][0]["logs"][0]["stdout"].endswith("python: yes\n")  # the host's system view has


def test_a_whiteout_never_removes_through_a_link(tmp_path):
    """A lower layer's link to / and an upper layer's whiteout below it would remove a
    file of this machine's: refused, and nothing is left."""
    victim = Path(tempfile.mkdtemp(prefix="batches-victim-"))
    (victim / "keep").write_text("mine")
    lower = _tar([("usr", None, None), ("lib", None, str(victim))])
    upper = _tar([("lib/.wh.keep", b"", None)])
    archive = _archive(
        tmp_path / "image.tar",
        {"manifest.json": json.dumps([{"Layers": ["1.tar", "2.tar"]}]).encode(), "1.tar": lower, "2.tar": upper},
    )
    with pytest.raises(ImageImportError, match="outside the image"):
        import_image(archive=archive, root=tmp_path / "images" / "x")
    assert (victim / "keep").read_text() == "mine"
    assert os.listdir(tmp_path / "images") == []


def test_hard_links_stay_inside_and_every_file_is_roots(tmp_path):
    """A hard link to a host file (the tar filter does not check their targets) made
    the import chown and chmod the host file itself, root 0600 to uid 999 0644; files
    an image gives to uid 999 (postgres's, in real images) were the shared job account's
    to change. Hard links go only to the image's own files, and every file is root's."""
    victim = tmp_path / "hostfile"
    victim.write_text("host secret")
    victim.chmod(0o600)

    def image(*, leak: bool) -> Path:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in ("usr", "usr/bin"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            data = tarfile.TarInfo("usr/bin/tool")
            data.size, data.mode, data.uid, data.gid = 4, 0o755, 999, 999
            tar.addfile(data, io.BytesIO(b"tool"))
            same = tarfile.TarInfo("usr/bin/alias")
            same.type, same.linkname = tarfile.LNKTYPE, "usr/bin/tool"
            tar.addfile(same)
            if leak:
                bad = tarfile.TarInfo("usr/leak")
                bad.type, bad.linkname, bad.mode, bad.uid = tarfile.LNKTYPE, "../" * 12 + str(victim).lstrip("/"), 0o644, 999
                tar.addfile(bad)
        path = tmp_path / f"{leak}.tar"
        path.write_bytes(buffer.getvalue())
        return path

    import_image(archive=image(leak=False), root=tmp_path / "images" / "good")
    tool = tmp_path / "images" / "good" / "usr/bin/tool"
    assert (tool.stat().st_uid, tool.stat().st_gid, tool.stat().st_nlink) == (0, 0, 2)
    with pytest.raises(ImageImportError):
        import_image(archive=image(leak=True), root=tmp_path / "images" / "bad")
    assert (victim.stat().st_uid, victim.stat().st_mode & 0o777, victim.stat().st_nlink) == (0, 0o600, 1)
    assert not (tmp_path / "images" / "bad").exists()
