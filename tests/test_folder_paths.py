"""``FolderPaths``: which paths the folder source may take, decided without I/O (RELIABILITY 10),
and the folder layouts ``resolved`` refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.sources.folder.paths import FolderPaths
from connectors.sources.folder.settings import FolderSettings


def settings(tmp_path: Path, **kwargs: object) -> FolderSettings:
    return FolderSettings.model_validate({"name": "scans", "path": tmp_path / "in", **kwargs})


def test_candidates_are_plain_files_inside_the_root(tmp_path: Path) -> None:
    paths = FolderPaths.resolved(settings(tmp_path, ignore=["*.xml"]))
    root = paths.root
    assert paths.candidate(root / "invoice.pdf")
    for rejected in [
        root,
        tmp_path / "elsewhere.pdf",
        root / ".." / "in2" / "x.pdf",
        root / "processed" / "x.pdf",
        root / "failed" / "x.pdf",
        root / "sub" / "x.pdf",  # not recursive
        root / "scan.pdf.part",
        root / "~$lock.docx",
        root / "THUMBS.DB",  # case-insensitive
        root / ".docrelay-1234.tmp",
        root / "x.pdf.reason.txt",
        root / "data.XML",
    ]:
        assert not paths.candidate(rejected), rejected


def test_recursive_takes_subfolders_but_not_ignored_ones(tmp_path: Path) -> None:
    paths = FolderPaths.resolved(settings(tmp_path, recursive=True))
    root = paths.root
    assert paths.candidate(root / "sub" / "deeper" / "x.pdf")
    assert not paths.candidate(root / "@eaDir" / "x.pdf")
    assert not paths.candidate(root / ".hidden" / "x.pdf")
    assert not paths.candidate(root / "processed" / "sub" / "x.pdf")
    assert paths.inside(root / "sub" / "x.pdf")
    assert not paths.inside(root / "failed" / "x.pdf")
    assert not paths.inside(tmp_path / "x.pdf")


def test_resolved_creates_the_folders_and_resolves_them(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    paths = FolderPaths.resolved(
        FolderSettings.model_validate({"name": "s", "path": tmp_path / "link"})
    )
    assert paths.root == tmp_path.resolve() / "real"
    assert paths.processed == paths.root / "processed" and paths.processed.is_dir()
    assert paths.failed.is_dir()
    keep = FolderPaths.resolved(settings(tmp_path, after="keep"))
    assert not keep.processed.exists()  # only after = "move" needs it


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failed_dir": ".."}, "must not be the watched folder"),
        ({"processed_dir": "/"}, "must not be the watched folder"),
        ({"processed_dir": "x/../failed"}, "are the same folder"),
    ],
)
def test_resolved_refuses_overlapping_folders(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FolderPaths.resolved(settings(tmp_path, **kwargs))


def test_resolved_refuses_a_file_as_the_folder(tmp_path: Path) -> None:
    (tmp_path / "in").write_text("not a folder")
    with pytest.raises(FileExistsError):
        FolderPaths.resolved(settings(tmp_path))
