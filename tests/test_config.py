import pytest
import yaml

from alphagan.config import ConfigError, flatten, load_params, parse_params, with_overrides
from tests.conftest import REPO_ROOT


def test_repo_params_load_with_their_values():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.source == "dicebear"
    assert params.data.kaggle.handle == "splcher/animefacedataset/versions/3"
    assert params.validate_params.max_reject_fraction == 0.2
    assert params.as_dict()["validate"]["min_side"] == params.validate_params.min_side


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"data": {"imagesize": 64}}, ["data.imagesize", "unknown key"]),
        ({"data": {"image_size": 50}}, ["data.image_size = 50", "16", "256"]),
        ({"data": {"image_size": "64"}}, ["data.image_size = '64'"]),
        ({"validate": {"max_reject_fraction": 1.5}}, ["validate.max_reject_fraction = 1.5", "less than or equal to 1"]),
        ({"data": {"dicebear": {"styles": ["nope"]}}}, ["data.dicebear", "unknown style", "nope", "adventurer"]),
        ({"data": {"source": "folder"}}, ["data.folder.path is empty"]),
        ({"prepare": {"background": [0, 0, 300]}}, ["prepare", "0..255"]),
        ({"train": {"lr_decay_fraction": 1.5}}, ["train.lr_decay_fraction = 1.5", "less than or equal to 1"]),
        ({"train": {"lr_decay_fraction": -0.1}}, ["train.lr_decay_fraction = -0.1", "greater than or equal to 0"]),
        ({"train": {"decoder_channels": -8}}, ["train.decoder_channels = -8", "greater than or equal to 0"]),
        ({"train": {"discriminator_channels": 2.5}}, ["train.discriminator_channels = 2.5", "integer"]),
    ],
)
def test_bad_params_name_key_value_and_allowed(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_bad_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "p.yaml"
    broken.write_text("data: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(broken)
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")


def test_stage_stops_before_work_on_bad_params(tmp_path, capsys):
    from pipelines import fetch

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"image_size": 48}, "paths": {"raw": str(tmp_path / "raw")}}))
    assert fetch.main(["--params", str(params)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fetch: error: data.image_size = 48")
    assert not (tmp_path / "raw").exists()


def test_flatten_joins_lists():
    assert flatten({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": 1, "a.c": "1,2"}


def test_code_defaults_are_params_yaml():
    """One source of defaults: a param left out of a params file (tests, benchmarks, a user's
    partial file) means what params.yaml says. Edit both together, or this fails naming the keys."""
    from alphagan.config import Params, flatten, load_params

    from tests.conftest import REPO_ROOT

    in_code = flatten(Params().as_dict())
    in_yaml = flatten(load_params(REPO_ROOT / "params.yaml").as_dict())
    drift = {key: (in_code.get(key), in_yaml.get(key)) for key in in_code.keys() | in_yaml.keys()
             if in_code.get(key) != in_yaml.get(key)}
    assert not drift, f"config.py default vs params.yaml: {drift}"


def test_overrides_change_only_the_named_params_with_yaml_values():
    base = load_params(REPO_ROOT / "params.yaml")
    changed = with_overrides(base, ["train.feature_weight=0", "train.diffaugment=[color, cutout]", "data.dicebear.count=90"])
    assert changed.train.feature_weight == 0.0
    assert changed.train.diffaugment == ("color", "cutout")
    assert changed.data.dicebear.count == 90
    untouched = {k: v for k, v in flatten(changed.as_dict()).items()
                 if k not in {"train.feature_weight", "train.diffaugment", "data.dicebear.count"}}
    assert untouched == {k: v for k, v in flatten(base.as_dict()).items() if k in untouched}
    assert base == load_params(REPO_ROOT / "params.yaml")  # the original is not modified


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("train.feature_weight", "section.key=value"),
        ("feature_weight=1", "section.key=value"),
        ("trian.kl_weight=1", "'trian' is not a section"),
        ("train.kl_wieght=1", "train.kl_wieght is not a parameter"),
        ("train.kl_weight=-1", "train.kl_weight = -1"),
        ("train.diffaugment=[color", "not valid YAML"),
    ],
)
def test_bad_overrides_say_which_and_why(assignment, expected):
    with pytest.raises(ConfigError) as info:
        with_overrides(load_params(REPO_ROOT / "params.yaml"), [assignment])
    assert expected in str(info.value)
