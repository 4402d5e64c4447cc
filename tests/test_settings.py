from pathlib import Path

import pytest

from rag.settings import Settings, load_settings


def test_layers_defaults_toml_env_flags(tmp_path: Path):
    toml = tmp_path / "rag.toml"
    toml.write_text('collection = "from-toml"\nk = 7\nmode = "bm25"\n')
    env = {"RAG_K": "9", "RAG_CHUNK_SIZE": "120"}
    s = load_settings(toml, environ=env, overrides={"mode": "dense", "collection": None})
    assert s.collection == "from-toml"  # toml beats default; a None flag changes nothing
    assert s.k == 9  # env beats toml
    assert s.mode == "dense"  # flags beat everything
    assert s.chunk_size == 120
    assert s.backend == "local"  # untouched default


def test_missing_toml_is_fine(tmp_path: Path):
    assert load_settings(tmp_path / "absent.toml", environ={}).collection == "default"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k": 0}, r"k must be positive, got 0"),
        ({"mode": "fuzzy"}, r"mode must be one of auto, dense, bm25, hybrid; got 'fuzzy'"),
        ({"chunk_overlap": 300}, r"chunk_overlap must be in \[0, chunk_size=200\), got 300"),
        ({"collection": "../etc"}, r"collection name '../etc' is invalid"),
        ({"backend": "gpu"}, r"backend must be one of local, server; got 'gpu'"),
        ({"section_weight": -0.1}, r"section_weight must be in \[0, 2\], got -0.1"),
    ],
)
def test_bad_values_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        Settings(**changes)


def test_bad_env_value_names_setting(tmp_path: Path):
    with pytest.raises(ValueError, match=r"setting k expects int, got 'many'"):
        load_settings(None, environ={"RAG_K": "many"})


def test_unknown_toml_key(tmp_path: Path):
    toml = tmp_path / "rag.toml"
    toml.write_text("colection = 'typo'\n")
    with pytest.raises(ValueError, match=r"unknown setting 'colection'"):
        load_settings(toml, environ={})


@pytest.mark.parametrize("name", ["a" * 300, "two words", "star*", "back\\slash", "new\nline", ".hidden", "-dash",
                                  "a/b", ""])
def test_collection_names_are_validated_as_documented(name):
    with pytest.raises(ValueError, match="use 1-64 letters, digits, '-' or '_'"):
        Settings(collection=name)


def test_valid_collection_names():
    for name in ("sample", "python-faq", "Work_2026", "x" * 64):
        assert Settings(collection=name).collection == name
