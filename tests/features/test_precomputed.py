"""Sources of a modality's features (features/precomputed.py): what `auto` means per dataset, the errors for
a source that cannot work, and the import of an MMSA pickle as extract@<m> (ids, non-finite values, clips
the file lacks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_mmsa_pickle

from pipeline.core.config import ConfigError, load_section
from pipeline.features.extraction import Failures
from pipeline.features.precomputed import Source, check_sources, import_source, resolve_source
from pipeline.features.store import FeatureReader, FeatureWriter


@pytest.mark.parametrize(("dataset", "modality", "value", "expected"), [
    ("mosi", "video", "auto", Source("video", "media")),
    ("vegas_features", "video", "auto", Source("video", "vegas", "vegas_feature.h5", "visual")),
    ("vegas_features", "audio", "auto", Source("audio", "vegas", "vegas_feature.h5", "audio")),
    ("mosi", "audio", "CMU_MOSI_COVAREP.csd", Source("audio", "csd", "CMU_MOSI_COVAREP.csd")),
    ("mosei", "video", "mmsa/unaligned_50.pkl:vision", Source("video", "mmsa", "mmsa/unaligned_50.pkl", "vision")),
])
def test_sources_resolve(dataset: str, modality: str, value: str, expected: Source) -> None:
    assert resolve_source(modality, value, dataset) == expected


@pytest.mark.parametrize(("dataset", "value", "message"), [
    ("vegas_features", "media", r"extract.video.source: dataset 'vegas_features' has no clips .* use auto"),
    ("mosi", "FACET.txt", r"'FACET.txt' is not a known feature file; expected auto, media, or a file named \*.csd"),
    ("mosi", "unaligned_50.pkl", r"needs a key after ':' naming its array, one of \['audio', 'vision'\]"),
    ("mosi", "unaligned_50.pkl:visoin", r"got 'visoin'. Did you mean 'vision'\?"),
    ("mosi", "FACET.csd:features", r"drop ':features'"),
])
def test_a_source_that_cannot_work_names_the_key(dataset: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_source("video", value, dataset)


@pytest.mark.parametrize("value", ["/data/FACET.csd", "../FACET.csd", "a/../../FACET.csd"])
def test_files_outside_the_dataset_folder_are_refused_by_the_params_check(project: Path, value: str) -> None:
    from conftest import small_params, with_edits, write_project

    write_project(project, with_edits(small_params(), {"extract.video.source": value}))
    with pytest.raises(ConfigError, match="extract.video.source: .* relative to data/raw/<dataset>/"):
        load_section("extract")


def test_check_names_a_missing_file(project: Path) -> None:
    from conftest import small_params, with_edits, write_project

    write_project(project, with_edits(small_params(), {"dataset": "mosi", "extract.audio.source": "COVAREP.csd"}))
    (project / "data/raw/mosi").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"extract.audio.source: data/raw/mosi/COVAREP.csd not found"):
        check_sources(load_section("extract"), "mosi")


def test_an_mmsa_pickle_is_imported_for_the_manifests_clips(project: Path) -> None:
    root = project / "data/raw/mosi"
    root.mkdir(parents=True)
    data = write_mmsa_pickle(root / "unaligned_50.pkl")
    data_ids = [str(i) for s in ("train", "valid", "test") for i in data[s]["id"]]
    ids = [*data_ids[:5], "absent$_$1"]  # one manifest clip the file lacks
    manifest = pd.DataFrame({"id": ids, "video": [f"Raw/{i}.mp4" for i in ids]})
    source = resolve_source("audio", "unaligned_50.pkl:audio", "mosi")
    failures = Failures()
    with FeatureWriter(project / "audio.h5", source.config(), {}) as writer:
        import_source(source, "mosi", manifest, writer, failures)
        writer.finalize()
    with FeatureReader(project / "audio.h5", source.config()) as reader:
        assert reader.ids() == sorted(ids[:5])
        n = data["train"]["audio_lengths"][2]
        np.testing.assert_array_equal(reader.read(ids[2])["features"], data["train"]["audio"][2, :n])
    assert [(r[0], r[1]) for r in failures.rows] == [("absent$_$1", "Raw/absent$_$1.mp4")]
    assert "no audio features in unaligned_50.pkl: no entry" in failures.rows[0][2]


def test_non_finite_values_become_zero(project: Path) -> None:
    import pickle

    root = project / "data/raw/mosi"
    root.mkdir(parents=True)
    audio = np.ones((1, 3, 2), np.float32)
    audio[0, 1, 0] = -np.inf
    (root / "a.pkl").write_bytes(pickle.dumps({"train": {"id": np.array(["v$_$1"], dtype=object), "audio": audio}}))
    source = resolve_source("audio", "a.pkl:audio", "mosi")
    with FeatureWriter(project / "audio.h5", source.config(), {}) as writer:
        import_source(source, "mosi", pd.DataFrame({"id": ["v$_$1"], "video": [""]}), writer, Failures())
        writer.finalize()
    with FeatureReader(project / "audio.h5") as reader:
        np.testing.assert_array_equal(reader.read("v$_$1")["features"], [[1, 1], [0, 1], [1, 1]])
