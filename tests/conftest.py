"""Shared fixtures: three users with different rights (alice and bob are ordinary
users, root is staff), their API clients, and the demo catalog."""

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import issue_token
from batches.catalog import load_catalog_file, sync_catalog
from batches.models import Filesystem, Tool

ROOT = Path(__file__).resolve().parent.parent


def make_client(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        _, plaintext = issue_token(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        client.token = plaintext
    return client


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob")


@pytest.fixture
def root(db) -> User:
    return User.objects.create_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(root) -> Client:
    """root logged in to the admin."""
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def alice_client(alice) -> APIClient:
    return make_client(alice)


@pytest.fixture
def bob_client(bob) -> APIClient:
    return make_client(bob)


@pytest.fixture
def root_client(root) -> APIClient:
    return make_client(root)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def catalog(db, tmp_path) -> dict[str, Any]:
    """The demo catalog, with the scratch filesystem moved under tmp_path, plus a
    private filesystem granted to nobody."""
    data = load_catalog_file(ROOT / "catalog" / "demo.yaml")
    for fs in data["filesystems"]:
        fs["path"] = str(tmp_path / fs["name"])
    data["filesystems"].append({"name": "private", "path": str(tmp_path / "private"), "public": False})
    sync_catalog(data=data)
    return {
        "tools": {tool.name: tool for tool in Tool.objects.all()},
        "filesystems": {fs.name: fs for fs in Filesystem.objects.all()},
    }


def submission(catalog: dict[str, Any], *, tool: str = "echo", jobs: list[dict] | None = None, **hardware: Any) -> dict[str, Any]:
    """A valid submission body for `tool`, with overrides."""
    body_hardware = {"cpu": 1, "memory": 256, "filesystem_list": [str(catalog["filesystems"]["scratch"].pk)]}
    body_hardware.update(hardware)
    if jobs is None:
        jobs = [{"args": {"message": "hello"}}, {"args": {"message": "world"}}]
    return {"tool_id": str(catalog["tools"][tool].pk), "hardware": body_hardware, "jobs": jobs}
