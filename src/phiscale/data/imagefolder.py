"""The ImageFolder layout (one subfolder per class) read once, the same way by the writer and the torch loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phiscale.errors import PhiscaleError

# What PIL decodes without plugins; anything else in a class folder is ignored (e.g. README, .DS_Store).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageFolderIndex:
    """Every image of an ImageFolder with its label; classes are the sorted subfolder names (torchvision's rule)."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.samples)


def scan_image_folder(root: str | Path) -> ImageFolderIndex:
    """List `root/<class>/<image>` files; a missing, empty or image-less folder is a PhiscaleError."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PhiscaleError(
            f"ImageFolder {str(root)!r} is not a directory: pass a folder with one subfolder of images per class"
        )
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise PhiscaleError(
            f"ImageFolder {str(root)!r} has no class subfolders: put each class's images in root/<class_name>/"
        )
    samples: list[tuple[Path, int]] = []
    ignored: list[Path] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            empty.append(name)
        samples += [(p, label) for p in images]
    if not samples:
        seen = f" (found e.g. {ignored[0].name!r})" if ignored else ""
        raise PhiscaleError(
            f"ImageFolder {str(root)!r} has no images{seen}: class subfolders need files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    if empty:
        raise PhiscaleError(
            f"ImageFolder {str(root)!r} has class folders without images: {', '.join(empty[:5])}"
            f"{' …' if len(empty) > 5 else ''}; remove them or add images (labels must not have gaps)"
        )
    return ImageFolderIndex(root=root, classes=classes, samples=tuple(samples))
