"""python manage.py import_image ARCHIVE DIRECTORY [--replace]"""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batches.image_import import ImageImportError, import_image


class Command(BaseCommand):
    help = (
        "Unpack an image for TES tasks: a tar of a root filesystem (mmdebstrap, docker export), or an image archive "
        "(docker save, an OCI layout in a tar). Then name DIRECTORY in the catalog's images and run sync_catalog."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive", type=Path)
        parser.add_argument("directory", type=Path, help="Where the root filesystem goes, e.g. /srv/images/debian-bookworm.")
        parser.add_argument("--replace", action="store_true", help="Replace DIRECTORY if it exists (once the new one is whole).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = import_image(archive=options["archive"], root=options["directory"], replace=options["replace"])
        except ImageImportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{options['directory']}: {report.kind}, {report.layers} layer(s), {report.files} entries. "
            f'Map it in the catalog: images: [{{pattern: "NAME", root: {options["directory"].absolute()}}}]'
        )
