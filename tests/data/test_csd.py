"""Tests of pipeline.data.csd: CMU-MultimodalSDK computational sequences in and out of our feature files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.data.csd import (
    SDK_METADATA_KEYS,
    CsdError,
    clip_id_of,
    csd_key,
    evenly_split,
    export_csd,
    import_csd,
    main,
    step_intervals,
)
from pipeline.data.datasets import MANIFEST_COLUMNS
from pipeline.features.store import FeatureReader, FeatureWriter, StoreError

CONFIG = {"modality": "video", "frames": 4}
IDS = ["vidA$_$1", "vidA$_$2", "vidB$_$0003", "plain"]


def clip_frames(i: int, rows: int = 4) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((rows, 6)).astype(np.float32)


def write_features(path: Path, ids: list[str] = IDS, extra: dict[str, np.ndarray] | None = None) -> Path:
    with FeatureWriter(path, CONFIG, versions={"torch": "x"}) as w:
        for i, clip_id in enumerate(ids):
            w.write(clip_id, {"frames": clip_frames(i, rows=2 + i), **(extra or {})})
        w.finalize()
    return path


def manifest_for(ids: list[str], **columns: list) -> pd.DataFrame:
    parts = [i.split("$_$", 1) if "$_$" in i else [i, ""] for i in ids]
    table = pd.DataFrame({
        "id": ids, "split": "train", "label": 0.0, "text": "", "video": "",
        "video_id": [p[0] for p in parts], "clip_id": [p[1] for p in parts],
    })
    for name, values in columns.items():
        table[name] = values
    return table


def sdk_metadata(root: str) -> dict:
    """Metadata as the SDK's deploy leaves it: every template key, a random uuid and md5 None."""
    meta = {key: f"{key} of {root}" for key in SDK_METADATA_KEYS}
    meta.update({"root name": root, "alignment compatible": True, "dimension names": ["f0", "f1", "f2"],
                 "md5": None, "uuid": "c0ffee00-0000-4000-8000-000000000000"})
    return meta


def write_sdk_csd(path: Path, root: str, entries: dict[str, tuple[np.ndarray, np.ndarray]],
                  metadata: dict | None = None, plain: dict[str, str] | None = None) -> Path:
    """A .csd written the way the SDK's write_CSD does (metadata: json.dumps in a (1,) vlen str dataset).

    `plain` entries are stored as bare strings, as older files have them."""
    with h5py.File(path, "w") as f:
        group = f.create_group(root)
        data = group.create_group("data")
        for key, (features, intervals) in entries.items():
            entry = data.create_group(key)
            entry.create_dataset("features", data=features, compression="gzip", compression_opts=9)
            entry.create_dataset("intervals", data=intervals, compression="gzip", compression_opts=9)
        meta = group.create_group("metadata")
        for key, value in (sdk_metadata(root) if metadata is None else metadata).items():
            meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))
            meta[key][0] = json.dumps(value)
        for key, value in (plain or {}).items():
            meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))
            meta[key][0] = value
    return path


def seq(rows: int, start: float = 0.0, step: float = 1.0, dim: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    features = np.random.default_rng(seed).standard_normal((rows, dim))  # float64, as in the SDK's files
    return features, step_intervals(rows, step) + start


# --------------------------------------------------------------------------- keys


def test_keys_map_both_ways() -> None:
    assert csd_key("vidA$_$1") == "vidA[1]"
    assert csd_key("plain") == "plain"
    assert clip_id_of("vidA[1]") == "vidA$_$1"
    assert clip_id_of("-3g5yACwYnA") == "-3g5yACwYnA"
    assert clip_id_of(csd_key("a$_$b$_$c")) == "a$_$b$_$c"


# --------------------------------------------------------------------------- export / round trip


def test_export_writes_the_sdk_layout_and_imports_back(tmp_path: Path) -> None:
    video = write_features(tmp_path / "features" / "toy" / "video.h5")
    out = tmp_path / "video.csd"
    assert export_csd(video, out, "frames", 0.5, "mmdistill_clip_video", {"creator": "me"}) == len(IDS)
    assert not out.with_name(out.name + ".partial").exists()

    with h5py.File(out, "r") as f:
        assert list(f.keys()) == ["mmdistill_clip_video"]
        root = f["mmdistill_clip_video"]
        assert sorted(root["data"].keys()) == sorted(["vidA[1]", "vidA[2]", "vidB[0003]", "plain"])
        np.testing.assert_array_equal(root["data"]["vidB[0003]"]["features"][()], clip_frames(2, rows=4))
        np.testing.assert_allclose(root["data"]["vidB[0003]"]["intervals"][()],
                                   [[0, 0.5], [0.5, 1.0], [1.0, 1.5], [1.5, 2.0]])
        meta = root["metadata"]
        assert set(SDK_METADATA_KEYS) | {"md5", "uuid"} <= set(meta.keys())
        assert meta["root name"].shape == (1,)  # the SDK's layout: a (1,) string dataset of JSON
        assert json.loads(meta["root name"][0]) == "mmdistill_clip_video"
        assert json.loads(meta["creator"][0]) == "me"
        assert json.loads(meta["md5"][0]) is None
        assert json.loads(meta["dataset name"][0]) == "toy"
        assert json.loads(meta["mmdistill config"][0]) == CONFIG
        first_uuid = meta["uuid"][0]
    export_csd(video, tmp_path / "again.csd", "frames", 0.5, "mmdistill_clip_video", {"creator": "me"})
    with h5py.File(tmp_path / "again.csd", "r") as f:
        assert f["mmdistill_clip_video"]["metadata"]["uuid"][0] == first_uuid  # reruns agree

    written, missing = import_csd(out, tmp_path / "back.h5", manifest_for(IDS))
    assert (written, missing) == (len(IDS), [])
    with FeatureReader(tmp_path / "back.h5") as back:
        assert back.ids() == sorted(IDS)
        assert back.config["modality"] == "mmdistill_clip_video"
        assert back.config["source"]["file"] == "video.csd"
        assert back.config["source"]["root name"] == "mmdistill_clip_video"
        assert len(back.config["source"]["md5"]) == 32
        assert back.config["metadata"]["creator"] == "me"
        for i, clip_id in enumerate(IDS):
            arrays = back.read(clip_id)
            assert arrays["features"].dtype == np.float32
            np.testing.assert_array_equal(arrays["features"], clip_frames(i, rows=2 + i))
            np.testing.assert_allclose(arrays["intervals"], step_intervals(2 + i, 0.5))


def test_export_interval_function_and_1d_arrays(tmp_path: Path) -> None:
    video = write_features(tmp_path / "video.h5", ids=["v$_$1", "v$_$2"], extra={"pooled": np.arange(6.0)})
    out = tmp_path / "pooled.csd"
    export_csd(video, out, "pooled", evenly_split({"v$_$1": 3.0, "v$_$2": 4.0}), "pooled")
    with h5py.File(out, "r") as f:
        entry = f["pooled"]["data"]["v[2]"]
        np.testing.assert_array_equal(entry["features"][()], np.arange(6.0)[None, :])
        np.testing.assert_allclose(entry["intervals"][()], [[0.0, 4.0]])
    export_csd(video, out, "frames", evenly_split({"v$_$1": 3.0, "v$_$2": 4.0}), "frames")
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["frames"]["data"]["v[2]"]["intervals"][()],
                                   [[0, 4 / 3], [4 / 3, 8 / 3], [8 / 3, 4]])


def test_export_errors(tmp_path: Path) -> None:
    video = write_features(tmp_path / "video.h5")
    with pytest.raises(CsdError, match=r"clip 'plain' has no array 'logmel' \(it has \['frames'\]\)"):
        export_csd(video, tmp_path / "x.csd", "logmel", 0.01, "x")
    assert not (tmp_path / "x.csd").exists() and not (tmp_path / "x.csd.partial").exists()
    with pytest.raises(CsdError, match="step must be a positive number"):
        export_csd(video, tmp_path / "x.csd", "frames", 0.0, "x")
    with pytest.raises(CsdError, match="no duration for clip"):
        export_csd(video, tmp_path / "x.csd", "frames", evenly_split({}), "x")
    with pytest.raises(StoreError, match="not found"):
        export_csd(tmp_path / "nope.h5", tmp_path / "x.csd", "frames", 1.0, "x")


# --------------------------------------------------------------------------- import of SDK files


def test_import_sdk_file_with_segment_exact_and_video_level_keys(tmp_path: Path) -> None:
    entries = {
        "segvid[1]": seq(3, start=10.0, seed=1),  # SDK-aligned segment key
        "plain": seq(2, seed=2),  # exact clip id
        "long": seq(10, step=1.0, seed=3),  # video-level key, cut by start/end
        "solo": seq(4, seed=4),  # video-level key, the video's only clip
        "shared": seq(4, seed=5),  # video-level key, two clips, no span: cannot be assigned
        "unused": seq(1, seed=6),
    }
    csd = write_sdk_csd(tmp_path / "CMU_MOSI_COVAREP.csd", "COVAREP", entries, plain={"legacy": "not json"})
    ids = ["segvid$_$1", "plain", "long$_$a", "long$_$b", "long$_$late", "solo$_$1", "shared$_$1", "shared$_$2",
           "nowhere$_$1"]
    nan = float("nan")
    manifest = manifest_for(ids, start=[nan, nan, 1.5, 4.0, 20.0, nan, nan, nan, nan],
                            end=[nan, nan, 4.0, 6.0, 25.0, nan, nan, nan, nan])
    written, missing = import_csd(csd, tmp_path / "covarep.h5", manifest, "covarep")
    assert written == 5
    assert missing == ["long$_$late", "shared$_$1", "shared$_$2", "nowhere$_$1"]

    with FeatureReader(tmp_path / "covarep.h5") as got:
        assert got.ids() == sorted(["segvid$_$1", "plain", "long$_$a", "long$_$b", "solo$_$1"])
        assert got.config["modality"] == "covarep"
        assert got.config["source"]["root name"] == "COVAREP"
        assert got.config["metadata"]["alignment compatible"] is True  # JSON-decoded, as the SDK reads it
        assert got.config["metadata"]["dimension names"] == ["f0", "f1", "f2"]
        assert got.config["metadata"]["md5"] is None
        assert got.config["metadata"]["legacy"] == "not json"

        seg = got.read("segvid$_$1")
        np.testing.assert_array_equal(seg["features"], entries["segvid[1]"][0].astype(np.float32))
        np.testing.assert_array_equal(seg["intervals"], entries["segvid[1]"][1])
        np.testing.assert_array_equal(got.read("plain")["features"], entries["plain"][0].astype(np.float32))
        np.testing.assert_array_equal(got.read("solo$_$1")["features"], entries["solo"][0].astype(np.float32))

        a = got.read("long$_$a")  # [1.5, 4): rows [1,2) [2,3) [3,4), the first clipped at 1.5
        np.testing.assert_array_equal(a["features"], entries["long"][0][1:4].astype(np.float32))
        np.testing.assert_allclose(a["intervals"], [[1.5, 2], [2, 3], [3, 4]])
        b = got.read("long$_$b")
        np.testing.assert_array_equal(b["features"], entries["long"][0][4:6].astype(np.float32))
        np.testing.assert_allclose(b["intervals"], [[4, 5], [5, 6]])


def test_import_without_video_and_clip_columns_parses_ids(tmp_path: Path) -> None:
    csd = write_sdk_csd(tmp_path / "s.csd", "FACET 4.2", {"v[7]": seq(2)})
    written, missing = import_csd(csd, tmp_path / "facet.h5", pd.DataFrame({"id": ["v$_$7", "w$_$1"]}))
    assert (written, missing) == (1, ["w$_$1"])
    with FeatureReader(tmp_path / "facet.h5") as got:
        assert got.config["modality"] == "FACET 4.2"


def test_import_nonfinite_features_refused_or_zeroed(tmp_path: Path) -> None:
    features, intervals = seq(3)
    features[1, 2] = -np.inf  # as in CMU-MOSI's COVAREP
    features[2, 0] = np.nan
    csd = write_sdk_csd(tmp_path / "c.csd", "COVAREP", {"v[1]": (features, intervals)})
    with pytest.raises(CsdError, match=r"c\.csd: entry 'v\[1\]': 2 non-finite values in features.*nonfinite"):
        import_csd(csd, tmp_path / "c.h5", manifest_for(["v$_$1"]))
    assert not (tmp_path / "c.h5").exists()
    assert import_csd(csd, tmp_path / "c.h5", manifest_for(["v$_$1"]), nonfinite="zero") == (1, [])
    with FeatureReader(tmp_path / "c.h5") as got:
        expected = np.nan_to_num(features, nan=0.0, neginf=0.0).astype(np.float32)
        np.testing.assert_array_equal(got.read("v$_$1")["features"], expected)
        assert got.config["nonfinite"] == "zero"


# --------------------------------------------------------------------------- import errors


def test_import_refuses_a_file_that_is_not_hdf5(tmp_path: Path) -> None:
    bad = tmp_path / "COVAREP.csd"
    bad.write_text("not hdf5")
    with pytest.raises(StoreError, match=r"COVAREP\.csd is not an HDF5 file"):
        import_csd(bad, tmp_path / "o.h5", manifest_for(["v$_$1"]))
    with pytest.raises(StoreError, match="not found"):
        import_csd(tmp_path / "missing.csd", tmp_path / "o.h5", manifest_for(["v$_$1"]))


def test_import_refuses_missing_structure(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csd"
    with h5py.File(empty, "w"):
        pass
    with pytest.raises(StoreError, match=r"empty\.csd: no root group"):
        import_csd(empty, tmp_path / "o.h5", manifest_for(["v$_$1"]))

    no_data = tmp_path / "no_data.csd"
    with h5py.File(no_data, "w") as f:
        f.create_group("COVAREP").create_group("metadata")
    with pytest.raises(StoreError, match=r"no_data\.csd: root group 'COVAREP' has no `data` group"):
        import_csd(no_data, tmp_path / "o.h5", manifest_for(["v$_$1"]))

    no_meta = tmp_path / "no_meta.csd"
    with h5py.File(no_meta, "w") as f:
        f.create_group("COVAREP").create_group("data")
    with pytest.raises(StoreError, match=r"no_meta\.csd: root group 'COVAREP' has no `metadata` group"):
        import_csd(no_meta, tmp_path / "o.h5", manifest_for(["v$_$1"]))

    no_intervals = tmp_path / "no_intervals.csd"
    write_sdk_csd(no_intervals, "COVAREP", {"v[1]": seq(2)})
    with h5py.File(no_intervals, "a") as f:
        del f["COVAREP/data/v[1]/intervals"]
    with pytest.raises(StoreError, match=r"entry 'v\[1\]' has no `intervals` dataset"):
        import_csd(no_intervals, tmp_path / "o.h5", manifest_for(["v$_$1"]))


def test_import_refuses_bad_entries_naming_the_key(tmp_path: Path) -> None:
    features, intervals = seq(3)
    csd = write_sdk_csd(tmp_path / "len.csd", "COVAREP", {"good": seq(2), "v[1]": (features, intervals[:2])})
    with pytest.raises(CsdError, match=r"len\.csd: entry 'v\[1\]': features and intervals have different lengths "
                                       r"\(3 and 2 rows\)"):
        import_csd(csd, tmp_path / "o.h5", manifest_for(["v$_$1", "good"]))

    intervals[0, 1] = np.nan
    csd = write_sdk_csd(tmp_path / "iv.csd", "COVAREP", {"v[1]": (features, intervals)})
    with pytest.raises(CsdError, match=r"entry 'v\[1\]': 1 non-finite values in intervals"):
        import_csd(csd, tmp_path / "o.h5", manifest_for(["v$_$1"]), nonfinite="zero")

    words = np.array([[b"hello"], [b"world"]])
    csd = write_sdk_csd(tmp_path / "words.csd", "words", {"v[1]": (words, step_intervals(2, 0.3))})
    with pytest.raises(CsdError, match=r"entry 'v\[1\]': features are not numeric"):
        import_csd(csd, tmp_path / "o.h5", manifest_for(["v$_$1"]))

    csd = write_sdk_csd(tmp_path / "flat.csd", "x", {"v[1]": (np.zeros(2), step_intervals(2, 1.0))})
    with pytest.raises(CsdError, match=r"entry 'v\[1\]': features have shape \(2,\)"):
        import_csd(csd, tmp_path / "o.h5", manifest_for(["v$_$1"]))


def test_import_refuses_a_sequence_matching_no_clip(tmp_path: Path) -> None:
    csd = write_sdk_csd(tmp_path / "other.csd", "COVAREP", {"zzz": seq(2)})
    with pytest.raises(CsdError, match=r"other\.csd: none of its 1 entries \(e\.g\. \['zzz'\]\) matches"):
        import_csd(csd, tmp_path / "o.h5", manifest_for(["v$_$1"]))


# --------------------------------------------------------------------------- command line


def test_cli_export_then_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_features(tmp_path / "video.h5")
    manifest_csv = tmp_path / "manifest.csv"
    manifest_for(IDS, duration=[1.0, 2.0, 3.0, 4.0]).loc[:, [*MANIFEST_COLUMNS, "duration"]].to_csv(
        manifest_csv, index=False)
    out = tmp_path / "out.csd"

    assert main(["export", str(video), str(out), "--array", "frames", "--name", "mmdistill_clip_video",
                 "--fps", "4", "--meta", "dataset name=toy"]) == 0
    with h5py.File(out, "r") as f:
        meta = f["mmdistill_clip_video"]["metadata"]
        assert json.loads(meta["dataset name"][0]) == "toy"
        np.testing.assert_allclose(f["mmdistill_clip_video"]["data"]["vidA[1]"]["intervals"][()],
                                   step_intervals(2, 0.25))

    assert main(["import", str(out), str(tmp_path / "back.h5"), "--manifest", str(manifest_csv),
                 "--name", "video_csd"]) == 0
    assert "4 clips written" in capsys.readouterr().out
    with FeatureReader(tmp_path / "back.h5") as back:
        assert back.config["modality"] == "video_csd"
        np.testing.assert_array_equal(back.read("plain")["features"], clip_frames(3, rows=5))

    assert main(["export", str(video), str(out), "--array", "frames", "--name", "v", "--manifest",
                 str(manifest_csv)]) == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["v"]["data"]["plain"]["intervals"][()], step_intervals(5, 0.8))

    with pytest.raises(SystemExit):
        main(["import", str(out), str(tmp_path / "x.h5")])  # --manifest is required
