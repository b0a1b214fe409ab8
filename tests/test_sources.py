import io
import tarfile
import zipfile

import pytest

from alphagan.config import parse_params
from alphagan.sources import SourceError, fetch_images
from alphagan.sources.dicebear import render_avatars, style_credits
from alphagan.sources.folder import UnsafeArchiveError, import_folder
from alphagan.sources.kaggle import fetch_kaggle
from tests.oddfiles import _face, _jpeg


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dicebear_is_byte_identical_for_the_same_seed(tmp_path):
    params = parse_params({"data": {"dicebear": {"count": 6, "styles": ["adventurer", "notionists"]}}}).data.dicebear
    render_avatars(params, 32, seed=3, out_dir=tmp_path / "a", workers=2)
    render_avatars(params, 32, seed=3, out_dir=tmp_path / "b", workers=1)
    render_avatars(params, 32, seed=4, out_dir=tmp_path / "c", workers=1)
    first, second, other = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(first) == 6 and first == second
    assert sorted(first) == ["adventurer/000000.png", "adventurer/000002.png", "adventurer/000004.png",
                             "notionists/000001.png", "notionists/000003.png", "notionists/000005.png"]
    assert first != other
    assert all(data.startswith(b"\x89PNG") for data in first.values())


def test_style_credits_come_from_the_style_meta():
    (line,) = style_credits(["lorelei"])
    assert line.startswith("lorelei: Remix of") and "CC0 1.0" in line


def test_fetch_refuses_a_non_empty_target(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "old.png").write_bytes(b"x")
    with pytest.raises(SourceError, match="not empty"):
        fetch_images(parse_params({}), tmp_path / "raw")


def test_folder_copies_a_directory_and_extracts_archives(tmp_path):
    source = tmp_path / "mine"
    (source / "poses").mkdir(parents=True)
    (source / "poses" / "a.jpg").write_bytes(_jpeg(_face(seed=1)))
    (source / "b c.png").write_bytes(b"not really a png")
    (source / ".DS_Store").write_bytes(b"litter")
    assert import_folder(source, tmp_path / "out_dir") == 2
    assert _files(tmp_path / "out_dir") == {"poses/a.jpg": _jpeg(_face(seed=1)), "b c.png": b"not really a png"}

    with zipfile.ZipFile(tmp_path / "set.zip", "w") as archive:
        archive.writestr("set/a.jpg", _jpeg(_face(seed=1)))
        archive.writestr("__MACOSX/set/._a.jpg", b"fork")
    assert import_folder(tmp_path / "set.zip", tmp_path / "out_zip") == 1
    assert list(_files(tmp_path / "out_zip")) == ["set/a.jpg"]

    with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as archive:
        data = _jpeg(_face(seed=2))
        info = tarfile.TarInfo("x/face.jpg"); info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    assert import_folder(tmp_path / "set.tar.gz", tmp_path / "out_tar") == 1
    assert _files(tmp_path / "out_tar") == {"x/face.jpg": data}


@pytest.mark.parametrize("name", ["../escape.jpg", "/etc/evil.jpg", "ok/../../escape.jpg"])
def test_zip_escape_is_refused_and_nothing_written(tmp_path, name):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("fine.jpg", b"123")
        archive.writestr(name, b"pwned")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError, match="refusing the archive"):
        import_folder(tmp_path / "evil.zip", out)
    assert list(out.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".extract")] == []
    assert not (tmp_path / "escape.jpg").exists()


def test_tar_link_is_refused(tmp_path):
    with tarfile.open(tmp_path / "evil.tar", "w") as archive:
        link = tarfile.TarInfo("face.jpg"); link.type = tarfile.SYMTYPE; link.linkname = "/etc/passwd"
        archive.addfile(link)
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchiveError, match="'face.jpg' is a link"):
        import_folder(tmp_path / "evil.tar", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_folder_errors_are_specific(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        import_folder(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "file.rar").write_bytes(b"x")
    with pytest.raises(SourceError, match="neither a directory nor an archive"):
        import_folder(tmp_path / "file.rar", tmp_path / "out")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="not a readable zip archive"):
        import_folder(tmp_path / "bad.zip", tmp_path / "out")


def _fill_kagglehub_cache(cache, handle_images):
    """Lay out a kagglehub cache as the real download leaves it (version 3, images/<id>_<year>.jpg)."""
    version_dir = cache / "datasets" / "splcher" / "animefacedataset" / "versions" / "3"
    (version_dir / "images").mkdir(parents=True)
    for name, data in handle_images.items():
        (version_dir / "images" / name).write_bytes(data)
    (cache / "datasets" / "splcher" / "animefacedataset" / "3.complete").write_text("")


def test_kaggle_is_served_from_a_prefilled_cache_offline(tmp_path, monkeypatch):
    images = {"1_2000.jpg": _jpeg(_face(seed=1)), "2_2001.jpg": _jpeg(_face(seed=2))}
    _fill_kagglehub_cache(tmp_path / "cache", images)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    assert fetch_kaggle("splcher/animefacedataset/versions/3", tmp_path / "raw") == 2
    assert _files(tmp_path / "raw") == {f"images/{k}": v for k, v in images.items()}


def test_kaggle_without_cache_or_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret-key-123")
    with pytest.raises(SourceError) as info:
        fetch_kaggle("splcher/animefacedataset/versions/3", tmp_path / "raw")
    message = str(info.value)
    assert "data.source=folder" in message and "KAGGLE_USERNAME" in message
    assert "secret-key-123" not in message


def test_one_character_set_is_deterministic_varied_and_writes_only_a_new_folder(tmp_path):
    import numpy as np
    from PIL import Image

    from alphagan.sources.dicebear import character_options, render_character_set

    first = render_character_set(tmp_path / "a", count=12, seed=3, size=32)
    second = render_character_set(tmp_path / "b", count=12, seed=3, size=32)
    assert [p.name for p in first] == [f"character-{i:03d}.png" for i in range(12)]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    options = [character_options(3, i, 32) for i in range(12)]
    assert {o["seed"] for o in options} == {"character-3"}  # one character...
    for key in ("rotate", "translateX", "mouthVariant", "eyesVariant"):  # ...in many poses and expressions
        assert len({str(o[key]) for o in options}) > 3, key
    assert len({tuple(o["backgroundColor"]) for o in options}) > 3
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in first])
    assert len({pixel.tobytes() for pixel in pixels}) == 12
    # A folder with anything in it is refused, and its files are left alone.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.png").write_bytes(b"mine")
    with pytest.raises(SourceError, match="not an empty folder"):
        render_character_set(tmp_path / "mine", count=2)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.png"]
    assert (tmp_path / "mine" / "keep.png").read_bytes() == b"mine"
