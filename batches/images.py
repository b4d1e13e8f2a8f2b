"""Which root filesystem a task's step runs in, by its image name (batches.models.Image)."""

from fnmatch import fnmatchcase

from batches.models import Image

HOST = None  # the root of a name mapped to the host's system view


class UnknownImage(LookupError):
    """No image pattern of the catalog matches `name`."""

    def __init__(self, name: str, offered: list[str]) -> None:
        self.name = name
        listed = ", ".join(offered) if offered else "none: the operator has registered no images"
        super().__init__(f"image {name!r} is not offered here (offered: {listed})")


def resolve_images(names: list[str]) -> dict[str, str | None | UnknownImage]:
    """name -> its root directory (None: the host's system view) by the first catalog
    pattern that matches it, or an UnknownImage for a name none matches. One query."""
    images = list(Image.objects.values_list("pattern", "root"))
    resolved: dict[str, str | None | UnknownImage] = {}
    for name in names:
        match = next((root for pattern, root in images if fnmatchcase(name, pattern)), False)
        resolved[name] = UnknownImage(name, [p for p, _ in images]) if match is False else (match or HOST)
    return resolved
