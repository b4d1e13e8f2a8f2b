"""python manage.py demo_setup: a demo user, a token, and ready-to-paste curl lines.

Used by `make run`; safe to run again: with `--token-file` the token is kept there
(mode 0600) and reused while it is valid, so runs do not pile up demo tokens."""

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import authenticate_token, issue_token
from batches.selectors import granted_filesystems, visible_tools


class Command(BaseCommand):
    help = "Create the demo user if needed, issue a token and print curl lines that use it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", default="demo")
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--token-file", default="", help="keep the token here and reuse it while it is valid")
        parser.add_argument(
            "--env-file", default="", help="write BATCHES_URL and BATCHES_TOKEN here, for `set -a; . FILE; set +a` (mode 0600)"
        )

    def handle(self, *args, **options) -> None:
        user, _ = get_user_model().objects.get_or_create(username=options["user"])
        tool = visible_tools().filter(name="echo").first()
        if tool is None:
            raise CommandError("no echo tool: run `python manage.py sync_catalog catalog/demo.yaml` first")
        filesystems = [str(fs.pk) for fs in granted_filesystems(user=user).filter(name="scratch")]
        token = self._token(user=user, path=options["token_file"])
        url = options["url"].rstrip("/")
        body = (
            f'{{"tool_id": "{tool.pk}", "hardware": {{"cpu": 1, "memory": 256, "filesystem_list": {filesystems!r}}}, '
            '"jobs": [{"args": {"message": "hello"}}, {"args": {"message": "world"}}]}'
        ).replace("'", '"')
        auth = shlex.quote(f"Authorization: Bearer {token}")
        self.stdout.write(f"\nAPI token for user {user.username}:\n  {token}\n")
        self.stdout.write("Submit a batch of two echo jobs:")
        self.stdout.write(f"  curl -s -H {auth} -H 'Content-Type: application/json' -d {shlex.quote(body)} {url}/batches\n")
        self.stdout.write("Then, with the batch_id it prints:")
        self.stdout.write(f"  curl -s -H {auth} {url}/batches/BATCH_ID")
        self.stdout.write(f"  curl -s -H {auth} {url}/batches/BATCH_ID/jobs")
        self.stdout.write("Or with the command-line client, following the batch to its end:")
        client = Path(sys.executable).parent / "batches"  # next to this virtualenv's python (make venv puts it there)
        if client.is_relative_to(Path.cwd()):
            client = client.relative_to(Path.cwd())
        self.stdout.write(
            f"  BATCHES_URL={url} BATCHES_TOKEN={token} {shlex.quote(str(client))} submit echo --sweep message=hello,world --watch\n"
        )
        if options["env_file"]:
            _write_private(options["env_file"], f"BATCHES_URL={url}\nBATCHES_TOKEN={token}\n")
            self.stdout.write(f"The client's settings for this server (its port included) are in {options['env_file']}; in another shell:")
            self.stdout.write(f"  set -a; . {shlex.quote(options['env_file'])}; set +a\n")
        self.stdout.write(f"API docs: {url}/api/docs/   Admin: {url}/admin/ (make superuser first)\n")

    def _token(self, *, user: Any, path: str) -> str:
        if path and os.path.exists(path):
            with open(path) as handle:
                kept = handle.read().strip()
            found = authenticate_token(plaintext=kept)
            if found is not None and found.user_id == user.pk:
                return kept
        _, token = issue_token(user=user, name="make run")
        if path:
            _write_private(path, token + "\n")
        return token


def _write_private(path: str, text: str) -> None:
    """Write a file only its owner reads (it holds a token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
