"""config.json parsing: the real layout, the round trip, and labels that are never imported."""

from __future__ import annotations

import builtins
import copy
import importlib
import json
import sys
from pathlib import Path

import pytest

from moirai_cli.errors import ModelError
from moirai_cli.model.config import (
    ComponentSpec,
    Moirai1Config,
    Moirai2Config,
    MoiraiMoEConfig,
    detect_family,
    load_config,
    parse_config,
)

MIXTURE = "uni2ts.distribution.mixture.MixtureOutput"
KNOWN_COMPONENTS = [
    "uni2ts.distribution.student_t.StudentTOutput",
    "uni2ts.distribution.normal.NormalFixedScaleOutput",
    "uni2ts.distribution.negative_binomial.NegativeBinomialOutput",
    "uni2ts.distribution.log_normal.LogNormalOutput",
]
# Labels naming real, importable callables (or modules with import side effects): none may be
# imported or called. `this` prints on import and `antigravity` opens a browser.
HOSTILE_LABELS = [
    "os.system",
    "builtins.eval",
    "subprocess.Popen",
    "this.s",
    "antigravity.fly",
    "uni2ts.distribution.student_t.StudentTOutputX",
    "StudentTOutput",
]


def raw_config(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "config.json").read_text())


def parse_without_imports(raw: dict, source: str = "config.json") -> tuple[ModelError | None, list[str]]:
    """Run from_dict while recording every import statement and importlib call it makes.

    Returns the ModelError raised (or None) and the names of the modules it asked for.
    """
    seen: list[str] = []
    real_import = builtins.__import__
    real_import_module = importlib.import_module

    def spy_import(name, *args, **kwargs):
        seen.append(name)
        return real_import(name, *args, **kwargs)

    def spy_import_module(name, *args, **kwargs):
        seen.append(name)
        return real_import_module(name, *args, **kwargs)

    builtins.__import__, importlib.import_module = spy_import, spy_import_module
    try:
        MoiraiMoEConfig.from_dict(raw, source=source)
    except ModelError as exc:
        return exc, seen
    finally:
        builtins.__import__, importlib.import_module = real_import, real_import_module
    return None, seen


# --- the real layout -------------------------------------------------------------------------


def test_parses_the_fixture_config(tiny_checkpoint):
    config = load_config(tiny_checkpoint / "config.json")
    assert (config.d_model, config.d_ff, config.num_layers) == (128, 8, 2)
    assert config.patch_sizes == (16,) and config.max_patch_size == 16
    assert config.max_seq_len == 512
    assert config.scaling is True
    assert config.attn_dropout_p == 0.0 and config.dropout_p == 0.0
    assert config.num_heads == 2  # d_model // 64
    assert [c.kind for c in config.components] == ["student_t", "normal_fixed_scale", "negative_binomial", "log_normal"]
    assert config.components[1].fixed_scale == pytest.approx(0.001)
    assert [c.fixed_scale for c in (config.components[0], config.components[2], config.components[3])] == [None] * 3
    assert [c.params for c in config.components] == [
        ("df", "loc", "scale"),
        ("loc",),
        ("total_count", "logits"),
        ("loc", "scale"),
    ]


def test_parses_several_patch_sizes(multipatch_checkpoint):
    config = load_config(multipatch_checkpoint / "config.json")
    assert config.patch_sizes == (8, 16, 32)
    assert config.max_patch_size == 32


def test_fixed_scale_is_read_from_the_file(tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["components"][1]["scale"] = 0.25
    config = MoiraiMoEConfig.from_dict(raw)
    assert config.components[1] == ComponentSpec("normal_fixed_scale", 0.25)


def test_optional_keys_take_their_defaults(tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    for key in ("max_seq_len", "attn_dropout_p", "dropout_p", "scaling"):
        del raw[key]
    config = MoiraiMoEConfig.from_dict(raw)
    assert (config.max_seq_len, config.attn_dropout_p, config.dropout_p, config.scaling) == (512, 0.0, 0.0, True)


def test_scaling_false_is_kept(tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["scaling"] = False
    assert MoiraiMoEConfig.from_dict(raw).scaling is False


# --- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-moe-multipatch"])
def test_to_dict_reproduces_the_checkpoint_file(name, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint.parent / name)
    config = MoiraiMoEConfig.from_dict(raw)
    # Through JSON, as save_checkpoint writes it: the same document as the file.
    assert json.loads(json.dumps(config.to_dict())) == raw


def test_round_trip_of_a_non_default_config():
    config = MoiraiMoEConfig(
        d_model=192,
        d_ff=96,
        num_layers=3,
        patch_sizes=(8, 16, 32, 64, 128),
        max_seq_len=256,
        attn_dropout_p=0.1,
        dropout_p=0.2,
        scaling=False,
        components=(ComponentSpec("log_normal"), ComponentSpec("normal_fixed_scale", 0.5), ComponentSpec("student_t")),
    )
    again = MoiraiMoEConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.to_dict()["distr_output"]["components"] == [
        {"_target_": "uni2ts.distribution.log_normal.LogNormalOutput"},
        {"_target_": "uni2ts.distribution.normal.NormalFixedScaleOutput", "scale": 0.5},
        {"_target_": "uni2ts.distribution.student_t.StudentTOutput"},
    ]


def test_load_config_reads_what_save_writes(tmp_path, tiny_checkpoint):
    config = load_config(tiny_checkpoint / "config.json")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert load_config(path) == config


# --- labels are looked up, never imported ------------------------------------------------------


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_unknown_component_label_is_named_and_not_imported(label, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["components"][2] = {"_target_": label, "command": "echo pwned"}
    modules_before = set(sys.modules)
    error, imported = parse_without_imports(raw, source="some/config.json")
    assert error is not None and label in str(error)
    assert "some/config.json" in str(error)
    assert imported == []
    assert set(sys.modules) == modules_before


@pytest.mark.parametrize("label", HOSTILE_LABELS + KNOWN_COMPONENTS)
def test_unknown_top_level_label_is_named_and_not_imported(label, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["_target_"] = label
    modules_before = set(sys.modules)
    error, imported = parse_without_imports(raw)
    assert error is not None and label in str(error)
    assert imported == []
    assert set(sys.modules) == modules_before


def test_known_labels_parse_without_imports(tiny_checkpoint):
    error, imported = parse_without_imports(raw_config(tiny_checkpoint))
    assert error is None and imported == []


def test_hostile_label_in_a_file_is_not_imported(tmp_path, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["components"].append({"_target_": "this.s"})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    had_this = "this" in sys.modules
    with pytest.raises(ModelError, match=r"this\.s"):
        load_config(path)
    assert ("this" in sys.modules) == had_this


def test_the_mixture_label_is_not_a_component(tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["components"][0] = {"_target_": MIXTURE}
    with pytest.raises(ModelError, match="MixtureOutput"):
        MoiraiMoEConfig.from_dict(raw)


@pytest.mark.parametrize(
    "entry",
    [
        "uni2ts.distribution.student_t.StudentTOutput",  # a bare string, not a {_target_: ...} entry
        "uni2ts.distribution.normal.NormalFixedScaleOutput",
        {"scale": 0.001},  # no label at all
        {"_target_": ["uni2ts.distribution.student_t.StudentTOutput"]},  # not a string
    ],
)
def test_malformed_component_entries_are_errors(entry, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["components"][0] = entry
    with pytest.raises(ModelError, match="component"):
        MoiraiMoEConfig.from_dict(raw)


@pytest.mark.parametrize(
    "distr_output",
    [
        None,
        "uni2ts.distribution.mixture.MixtureOutput",
        [],
        {"components": []},
        {"_target_": MIXTURE, "components": {"_target_": KNOWN_COMPONENTS[0]}},
    ],
)
def test_malformed_distr_output_is_an_error(distr_output, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"] = distr_output
    with pytest.raises(ModelError, match="distr_output"):
        MoiraiMoEConfig.from_dict(raw)


def test_a_mixture_without_components_is_an_error(tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["components"] = []
    with pytest.raises(ModelError, match="no components"):
        MoiraiMoEConfig.from_dict(raw)


# --- missing and malformed keys ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["d_model", "d_ff", "num_layers", "patch_sizes", "distr_output"])
def test_missing_required_key_is_named(key, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    del raw[key]
    with pytest.raises(ModelError, match=f"missing key.*{key}"):
        MoiraiMoEConfig.from_dict(raw, source="x/config.json")


def test_all_missing_keys_are_listed():
    with pytest.raises(ModelError) as error:
        MoiraiMoEConfig.from_dict({})
    for key in ("d_model", "d_ff", "num_layers", "patch_sizes", "distr_output"):
        assert key in str(error.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("d_model", "wide"),
        ("num_layers", None),
        ("patch_sizes", 16),
        ("patch_sizes", ["sixteen"]),
        ("d_model", 100),  # not a multiple of the head size 64
        ("d_model", 0),
        ("patch_sizes", []),
        ("patch_sizes", [16, 0]),
    ],
)
def test_malformed_values_are_model_errors(key, value, tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw[key] = value
    with pytest.raises(ModelError):
        MoiraiMoEConfig.from_dict(raw)


def test_malformed_fixed_scale_is_a_model_error(tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    raw["distr_output"]["components"][1]["scale"] = "tiny"
    with pytest.raises(ModelError):
        MoiraiMoEConfig.from_dict(raw)


@pytest.mark.parametrize("document", ["null", "42", '"config"', "[1, 2]"])
def test_a_config_that_is_not_an_object_is_a_model_error(document, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(document)
    with pytest.raises(ModelError, match="config.json"):
        load_config(path)


def test_unreadable_config_files_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="cannot read model config"):
        load_config(tmp_path / "config.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"d_model": 128,')
    with pytest.raises(ModelError, match="broken.json"):
        load_config(broken)


def test_from_dict_does_not_modify_its_input(tiny_checkpoint):
    raw = raw_config(tiny_checkpoint)
    before = copy.deepcopy(raw)
    MoiraiMoEConfig.from_dict(raw)
    assert raw == before


# --- family detection --------------------------------------------------------------------------

MIXTURE_OUTPUT = {
    "_target_": MIXTURE,
    "components": [
        {"_target_": KNOWN_COMPONENTS[0]},
        {"_target_": KNOWN_COMPONENTS[1], "scale": 0.001},
        {"_target_": KNOWN_COMPONENTS[2]},
        {"_target_": KNOWN_COMPONENTS[3]},
    ],
}
# The layouts of the Hub's config.json files: the constructor arguments of the reference's
# MoiraiModule (1.x, no d_ff) and Moirai2Module (2.0), as its Hub mixin writes them.
MOIRAI_1_SMALL = {
    "attn_dropout_p": 0.0,
    "d_model": 384,
    "distr_output": MIXTURE_OUTPUT,
    "dropout_p": 0.0,
    "max_seq_len": 512,
    "num_layers": 6,
    "patch_sizes": [8, 16, 32, 64, 128],
    "scaling": True,
}
MOIRAI_2_SMALL = {
    "attn_dropout_p": 0,
    "d_ff": 1024,
    "d_model": 384,
    "dropout_p": 0,
    "max_seq_len": 512,
    "num_layers": 6,
    "num_predict_token": 4,
    "patch_size": 16,
    "quantile_levels": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "scaling": True,
}


def test_each_family_is_recognised_from_its_published_keys(tiny_checkpoint):
    assert detect_family(MOIRAI_1_SMALL) == "moirai-1"
    assert detect_family(raw_config(tiny_checkpoint)) == "moirai-moe"
    assert detect_family(MOIRAI_2_SMALL) == "moirai-2"


def test_moirai_1_config_parses_and_round_trips():
    config = parse_config(MOIRAI_1_SMALL)
    assert isinstance(config, Moirai1Config)
    assert (config.d_model, config.num_layers, config.patch_sizes, config.max_patch_size) == (384, 6, (8, 16, 32, 64, 128), 128)
    assert config.d_ff == 1024 and config.num_heads == 6
    assert [c.kind for c in config.components] == ["student_t", "normal_fixed_scale", "negative_binomial", "log_normal"]
    assert json.loads(json.dumps(config.to_dict())) == MOIRAI_1_SMALL


@pytest.mark.parametrize("d_model, width", [(384, 1024), (768, 2048), (1024, 2736), (128, 344)])
def test_moirai_1_feed_forward_width_follows_d_model(d_model, width):
    # The reference's gated feed-forward: int(4 d * 2/3), rounded up to a multiple of 8.
    assert Moirai1Config(d_model=d_model, num_layers=1, patch_sizes=(8,)).d_ff == width


def test_moirai_2_config_parses_and_round_trips():
    config = parse_config(MOIRAI_2_SMALL)
    assert isinstance(config, Moirai2Config)
    assert (config.d_model, config.d_ff, config.num_layers, config.patch_size) == (384, 1024, 6, 16)
    assert config.patch_sizes == (16,) and config.max_patch_size == 16
    assert config.num_predict_token == 4 and config.num_quantiles == 9
    assert config.quantile_levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert json.loads(json.dumps(config.to_dict())) == {**MOIRAI_2_SMALL, "attn_dropout_p": 0.0, "dropout_p": 0.0}


def test_moirai_2_optional_keys_take_the_reference_defaults():
    raw = {key: MOIRAI_2_SMALL[key] for key in ("d_model", "d_ff", "num_layers", "patch_size")}
    config = parse_config(raw)
    assert config.num_predict_token == 1 and config.quantile_levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_load_config_returns_the_family_of_the_file(tmp_path):
    for raw, cls in ((MOIRAI_1_SMALL, Moirai1Config), (MOIRAI_2_SMALL, Moirai2Config)):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(raw))
        assert type(load_config(path)) is cls


@pytest.mark.parametrize(
    "raw",
    [
        {"d_model": 384, "num_layers": 6},  # neither family's keys
        {"model_type": "t5", "d_model": 512},
        {},
    ],
)
def test_a_config_of_no_known_family_is_one_clear_error(raw):
    with pytest.raises(ModelError, match=r"x/config.json: not a Moirai checkpoint config.*patch_sizes.*Moirai 2\.0"):
        parse_config(raw, source="x/config.json")


def test_keys_of_two_families_are_refused():
    with pytest.raises(ModelError, match="cannot tell which model"):
        parse_config({**MOIRAI_1_SMALL, "patch_size": 16})


@pytest.mark.parametrize("key", ["d_model", "d_ff", "num_layers", "patch_size"])
def test_moirai_2_missing_key_is_named(key):
    raw = dict(MOIRAI_2_SMALL)
    del raw[key]
    with pytest.raises(ModelError, match=f"missing key.*{key}"):
        parse_config(raw)


@pytest.mark.parametrize(
    "key, value",
    [("quantile_levels", [0.5, 0.1]), ("quantile_levels", [0.0, 0.5]), ("quantile_levels", []), ("num_predict_token", 0),
     ("quantile_levels", "0.5"), ("patch_size", 0)],
)
def test_moirai_2_malformed_values_are_model_errors(key, value):
    with pytest.raises(ModelError):
        parse_config({**MOIRAI_2_SMALL, key: value})


def test_moirai_1_needs_its_mixture():
    raw = dict(MOIRAI_1_SMALL)
    del raw["distr_output"]
    with pytest.raises(ModelError, match="missing key.*distr_output"):
        parse_config(raw)


def test_longest_context_leaves_room_for_the_horizon_and_every_variate():
    config = MoiraiMoEConfig(d_model=128, d_ff=8, num_layers=1, patch_sizes=(8, 16), max_seq_len=512)
    assert config.longest_context(horizon=48, patch_size=16) == (512 - 3) * 16
    assert config.longest_context(horizon=49, patch_size=16) == (512 - 4) * 16  # a started patch counts
    assert config.longest_context(horizon=48, patch_size=16, tokens_per_step=3) == (170 - 3) * 16
    assert config.longest_context(horizon=10_000, patch_size=8) == 0
