"""Part 1: outputs are only ever the pipeline's own; nothing a user made is deleted."""

import os

import pytest
import yaml

from alphagan.atomic import MARKER, clean_leftovers
from alphagan.config import ConfigError, load_params
from pipelines import fetch, prepare, validate
from tests.oddfiles import _face, _jpeg


def _user_photos(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"me-{i}.jpg").write_bytes(_jpeg(_face(seed=i)))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_folder_source_equal_to_paths_raw_is_refused_and_kept(write_params, tmp_path, capsys):
    photos = _user_photos(tmp_path / "data/raw")
    params = write_params({"data": {"source": "folder", "folder": {"path": str(tmp_path / "data/raw")}}})
    assert fetch.main(["--params", str(params)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fetch: error: data.folder.path")
    assert "is the same directory as the output paths.raw" in err and str(tmp_path / "data/raw") in err
    assert _snapshot(tmp_path / "data/raw") == photos


@pytest.mark.parametrize(("folder", "relation"), [("data", "contains"), ("data/raw/mine", "sits inside"),
                                                   ("reports", "is the same directory as")])
def test_folder_source_overlapping_any_output_is_refused(write_params, tmp_path, folder, relation):
    _user_photos(tmp_path / folder)
    params = write_params({"data": {"source": "folder", "folder": {"path": str(tmp_path / folder)}}})
    with pytest.raises(ConfigError, match=relation):
        load_params(params)


def test_output_outside_the_project_root_is_refused_and_nothing_deleted(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    photos = _user_photos(tmp_path / "my-photos")
    (project / "params.yaml").write_text(yaml.safe_dump({"paths": {"raw": "../my-photos"}}))
    cwd = os.getcwd()
    os.chdir(project)  # as dvc runs it: in the project, relative paths
    try:
        assert fetch.main(["--params", "params.yaml"]) == 1
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip()
    assert "paths.raw = '../my-photos' resolves to" in err and str(tmp_path / "my-photos") in err and str(project) in err
    assert _snapshot(tmp_path / "my-photos") == photos


def test_symlinked_output_escaping_the_root_is_refused(write_params, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    photos = _user_photos(outside)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/raw").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="not inside the project root"):
        load_params(write_params())
    assert _snapshot(outside) == photos


def test_outputs_may_not_be_the_root_or_overlap(write_params, tmp_path):
    with pytest.raises(ConfigError, match="paths.models = .* not inside the project root"):
        load_params(write_params({"paths": {"models": str(tmp_path)}}))
    with pytest.raises(ConfigError, match=r"paths.raw .* and paths.validated .* overlap"):
        load_params(write_params({"paths": {"validated": str(tmp_path / "data/raw/v")}}))


def test_a_foreign_non_empty_output_directory_is_left_alone(write_params, tmp_path, capsys):
    photos = _user_photos(tmp_path / "data/raw")  # a user's files where paths.raw points, no marker
    params = str(write_params())
    assert fetch.main(["--params", params]) == 1
    err = capsys.readouterr().err.strip()
    assert "did not create" in err and str(tmp_path / "data/raw") in err and err.count("\n") == 0
    assert _snapshot(tmp_path / "data/raw") == photos
    # The same for validate's and prepare's directories.
    (tmp_path / "data/raw").rename(tmp_path / "kept")
    assert fetch.main(["--params", params]) == 0
    mine = _user_photos(tmp_path / "data/validated")
    assert validate.main(["--params", params]) == 1
    assert _snapshot(tmp_path / "data/validated") == mine
    (tmp_path / "data/validated").rename(tmp_path / "kept2")
    assert validate.main(["--params", params]) == 0
    mine = _user_photos(tmp_path / "data/prepared")
    assert prepare.main(["--params", params]) == 1
    assert _snapshot(tmp_path / "data/prepared") == mine


def test_the_pipelines_own_output_is_replaced_on_a_rerun(write_params, tmp_path):
    params = str(write_params())
    assert fetch.main(["--params", params]) == 0
    assert (tmp_path / "data/raw" / MARKER).is_file()
    first = _snapshot(tmp_path / "data/raw")
    (tmp_path / "data/raw/adventurer/stale.png").write_bytes(b"left over from an older run")
    assert fetch.main(["--params", params]) == 0
    assert _snapshot(tmp_path / "data/raw") == first  # replaced whole: no stale file mixed in
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw"]  # no temporary left beside it


def test_an_empty_source_is_an_error_and_keeps_the_previous_output(write_params, tmp_path, capsys):
    params = str(write_params())
    assert fetch.main(["--params", params]) == 0
    before = _snapshot(tmp_path / "data/raw")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/.hidden").write_bytes(b"x")
    params = str(write_params({"data": {"source": "folder", "folder": {"path": str(tmp_path / "empty")}}}))
    assert fetch.main(["--params", params]) == 1
    assert "holds no image files" in capsys.readouterr().err
    assert _snapshot(tmp_path / "data/raw") == before


def test_leftovers_of_dead_processes_are_cleaned_and_nothing_else(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".raw.tmp-{dead}").mkdir()
    (tmp_path / f".raw.tmp-{dead}/a.png").write_bytes(b"partial")
    (tmp_path / f".metrics.json.tmp-{dead}").write_text("{")
    (tmp_path / f".raw.tmp-{os.getpid()}").mkdir()  # a live run's: kept
    (tmp_path / "raw.tmp-1").write_text("a user's file that merely looks similar")
    (tmp_path / ".hidden").write_text("a user's file")
    removed = clean_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".raw.tmp-{dead}", f".metrics.json.tmp-{dead}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".raw.tmp-{os.getpid()}", "raw.tmp-1", ".hidden"])


def test_any_stage_cleans_every_stage_s_leftovers_but_only_its_own_names(write_params, tmp_path):
    dead = 2**22 + 777
    params = str(write_params())
    for leftover in (f"data/.raw.tmp-{dead}", f"data/.prepared.old-{dead}", f"models/.checkpoint.pt.tmp-{dead}",
                     f"reports/validate/.data_docs.tmp-{dead}", f"reports/train/.losses.csv.tmp-{dead}"):
        (tmp_path / leftover).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / leftover).write_text("partial")
    (tmp_path / f"data/.notes.tmp-{dead}").write_text("a user's file beside the outputs, not one of their names")
    assert fetch.main(["--params", params]) == 0  # fetch alone: the prepare, train and validate leftovers go too
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob(f"*-{dead}")) == [f"data/.notes.tmp-{dead}"]
