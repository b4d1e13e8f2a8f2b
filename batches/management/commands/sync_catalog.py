"""python manage.py sync_catalog FILE: create or update tools and filesystems."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batches.catalog import CatalogError, load_catalog_file, sync_catalog


class Command(BaseCommand):
    help = "Create or update tools and filesystems from a YAML or JSON catalog file (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="catalog file (.yaml, .yml or .json)")
        parser.add_argument("--no-create-dirs", action="store_true", help="do not create missing filesystem paths")

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        if not path.exists():
            raise CommandError(f"{path}: no such file")
        if not path.is_file():
            raise CommandError(f"{path}: not a regular file (a catalog is a .yaml, .yml or .json file)")
        try:
            report = sync_catalog(data=load_catalog_file(path), create_dirs=not options["no_create_dirs"])
        except CatalogError as exc:
            raise CommandError(str(exc)) from None
        for label in report.created:
            self.stdout.write(f"created {label}")
        for label in report.updated:
            self.stdout.write(f"updated {label}")
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        self.stdout.write(self.style.SUCCESS(f"catalog {path}: {report}"))
