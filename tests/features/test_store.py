"""Tests of pipeline.features.store: the resumable HDF5 feature files and the per-clip tables."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from pipeline.features.store import (
    FeatureReader,
    FeatureWriter,
    StoreError,
    config_diff,
    read_table,
    write_table,
)

CONFIG = {"clip": {"model": "mmdistill-tiny", "pretrained": ""}, "video": {"frames": 4}, "fps": 8}


def clip_arrays(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {
        "frames": rng.standard_normal((4, 6)).astype(np.float32),
        "mel": rng.standard_normal((3, 5)).astype(np.float16),
        "n": np.int64(10 + i),
        "mask": np.array([True, False, i % 2 == 0]),
    }


def write_file(path, ids, config=CONFIG, finalize=True):
    with FeatureWriter(path, config, versions={"torch": "x"}) as w:
        for i in ids:
            w.write(f"clip{i:02d}", clip_arrays(i))
        if finalize:
            w.finalize()


# --------------------------------------------------------------------------- round trip


def test_round_trip_arrays_dtypes_and_extra(tmp_path):
    path = tmp_path / "feats" / "video.h5"  # parent created by the writer
    with FeatureWriter(path, CONFIG, versions={"open_clip": "2.0"}) as w:
        for i in (3, 1, 2):
            w.write(f"clip{i:02d}", clip_arrays(i))
        w.write_extra("prompts", {"embeddings": np.arange(6, dtype=np.float32).reshape(2, 3),
                                  "classes": ["negative", "positive"], "templates": ["a {} face", "ünïcode {}"]})
        w.finalize()
    assert path.is_file() and not (tmp_path / "feats" / "video.h5.partial").exists()

    with FeatureReader(path, CONFIG) as r:
        assert r.ids() == ["clip01", "clip02", "clip03"]
        assert "clip02" in r and "clip09" not in r
        assert r.config == CONFIG
        assert r.versions == {"open_clip": "2.0"}
        for i in (1, 2, 3):
            got, want = r.read(f"clip{i:02d}"), clip_arrays(i)
            assert set(got) == set(want)
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
                assert np.asarray(got[name]).dtype == np.asarray(want[name]).dtype, name
        extra = r.extra("prompts")
        np.testing.assert_array_equal(extra["embeddings"], [[0, 1, 2], [3, 4, 5]])
        assert extra["embeddings"].dtype == np.float32
        assert extra["classes"] == ["negative", "positive"]
        assert extra["templates"] == ["a {} face", "ünïcode {}"]
        with pytest.raises(KeyError, match=r"clip 'clip09' not in"):
            r.read("clip09")
        with pytest.raises(StoreError, match=r"no extra group 'labels'"):
            r.extra("labels")


def test_ids_sorted(tmp_path):
    path = tmp_path / "f.h5"
    with FeatureWriter(path, CONFIG) as w:
        for cid in ["b", "a10", "a2", "C", "a1"]:
            w.write(cid, {"x": np.zeros(1)})
        w.finalize()
    assert FeatureReader(path).ids() == ["C", "a1", "a10", "a2", "b"]  # lexicographic, codepoint order


def test_write_extra_replaces_a_group(tmp_path):
    path = tmp_path / "f.h5"
    with FeatureWriter(path, CONFIG) as w:
        w.write_extra("g", {"a": np.ones(2), "b": ["x"]})
        w.write_extra("g", {"c": np.zeros(3)})
        w.finalize()
    extra = FeatureReader(path).extra("g")
    assert set(extra) == {"c"}
    np.testing.assert_array_equal(extra["c"], np.zeros(3))


def test_config_is_compared_after_json_round_trip(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0], config={"frames": np.int64(4), "templates": ("a", "b")})
    # a tuple and a numpy scalar equal what was stored (list, int)
    assert FeatureReader(path, {"frames": 4, "templates": ["a", "b"]}).config == {"frames": 4, "templates": ["a", "b"]}


# --------------------------------------------------------------------------- refusals


def test_reader_refuses_config_mismatch_naming_each_key(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0])
    requested = {"clip": {"model": "ViT-B-32", "pretrained": ""}, "video": {"frames": 4}, "fps": 16, "new": 1}
    with pytest.raises(StoreError, match=r"different configuration") as err:
        FeatureReader(path, requested, stage="extract@video")
    msg = str(err.value)
    assert "clip.model: file has 'mmdistill-tiny', requested 'ViT-B-32'" in msg
    assert "fps: file has 8, requested 16" in msg
    assert "new: file has '<absent>', requested 1" in msg
    assert "clip.pretrained" not in msg and "video.frames" not in msg
    assert "dvc repro extract@video" in msg


def test_reader_refuses_unfinished_partial(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0, 1], finalize=False)
    assert (tmp_path / "f.h5.partial").exists() and not path.exists()
    with pytest.raises(StoreError, match=r"not found \(an unfinished f\.h5\.partial exists\)") as err:
        FeatureReader(path, CONFIG, stage="extract@audio")
    assert "dvc repro extract@audio" in str(err.value)


def test_reader_refuses_missing_file_without_partial(tmp_path):
    with pytest.raises(StoreError, match=r"not found: run `dvc repro extract`") as err:
        FeatureReader(tmp_path / "f.h5")
    assert "partial" not in str(err.value)


def test_reader_refuses_file_marked_incomplete(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0])
    with h5py.File(path, "a") as f:  # e.g. a file written by another tool, not finished
        f.attrs["complete"] = False
    with pytest.raises(StoreError, match=r"is incomplete"):
        FeatureReader(path, CONFIG)


def test_reader_refuses_other_schema_version(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0])
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match=r"schema version 99, expected 1"):
        FeatureReader(path, CONFIG)


# --------------------------------------------------------------------------- resume


def test_resume_keeps_written_clips(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0, 1, 2], finalize=False)  # closed without finalize: an interrupted run

    with FeatureWriter(path, CONFIG) as w:
        assert w.done_ids() == {"clip00", "clip01", "clip02"}
        todo = [i for i in range(5) if f"clip{i:02d}" not in w.done_ids()]
        assert todo == [3, 4]
        for i in todo:
            w.write(f"clip{i:02d}", clip_arrays(i))
        w.finalize()

    r = FeatureReader(path, CONFIG)
    assert r.ids() == [f"clip{i:02d}" for i in range(5)]
    for i in range(5):  # the clips of the first run survived intact
        np.testing.assert_array_equal(r.read(f"clip{i:02d}")["frames"], clip_arrays(i)["frames"])


def test_resume_drops_a_chunk_cut_off_mid_write(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0, 1], finalize=False)
    partial = tmp_path / "f.h5.partial"
    # a crash (SIGKILL) while the next chunk was being written leaves only its temporary name
    with h5py.File(partial / "rank0-000099.tmp", "w") as f:
        f.create_group("clips").create_group("clip02").create_dataset("frames", data=np.zeros((1, 6)))

    with FeatureWriter(path, CONFIG) as w:
        assert w.done_ids() == {"clip00", "clip01"}
        assert not list(partial.glob("*.tmp"))
        w.write("clip02", clip_arrays(2))  # rewritable: the stale group is gone
        w.finalize()
    np.testing.assert_array_equal(FeatureReader(path, CONFIG).read("clip02")["frames"], clip_arrays(2)["frames"])


def test_resume_only_with_the_same_inputs_and_code(tmp_path, caplog):
    """The identity (input digests, code version) is compared like the config, and not recorded in the file."""
    path = tmp_path / "f.h5"
    first = {"input:manifest.csv": "aa", "code": "c1"}
    with FeatureWriter(path, CONFIG, identity=first) as w:
        w.write("clip00", clip_arrays(0))
    with FeatureWriter(path, CONFIG, identity=first) as w:
        assert w.done_ids() == {"clip00"}
    with caplog.at_level("WARNING"), FeatureWriter(path, CONFIG, identity={**first, "input:manifest.csv": "bb"}) as w:
        assert w.done_ids() == set()
        w.write("clip01", clip_arrays(1))
        w.finalize()
    assert "other inputs, config or code" in caplog.text and "input:manifest.csv" in caplog.text
    assert FeatureReader(path, CONFIG).ids() == ["clip01"]


def test_resume_with_other_config_starts_over(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0, 1], finalize=False)
    other = {**CONFIG, "fps": 30}
    with FeatureWriter(path, other) as w:
        assert w.done_ids() == set()
        w.write("clip05", clip_arrays(5))
        w.finalize()
    r = FeatureReader(path, other)
    assert r.ids() == ["clip05"] and r.config["fps"] == 30


def test_buffered_clips_are_written_in_atomic_chunks(tmp_path):
    path = tmp_path / "f.h5"
    with FeatureWriter(path, CONFIG) as w:
        w.write("clip00", clip_arrays(0))
        w.write("clip01", clip_arrays(1))
        assert not list((tmp_path / "f.h5.partial").glob("*-*.h5"))  # buffered only
        w.flush()
        w.write("clip02", clip_arrays(2))
        w.flush()
        chunks = sorted(p.name for p in (tmp_path / "f.h5.partial").glob("*-*.h5"))
        assert chunks == ["rank0-000000.h5", "rank0-000001.h5"]
        with pytest.raises(ValueError, match="clip01.*already"):
            w.write("clip01", clip_arrays(1))


def test_writers_with_different_tags_merge_into_one_file(tmp_path):
    """torchrun: one writer per rank fills the same .partial directory; one finalize merges."""
    path = tmp_path / "f.h5"
    single = tmp_path / "single.h5"
    write_file(single, range(6))
    rank0 = FeatureWriter(path, CONFIG, tag="rank0")
    rank1 = FeatureWriter(path, CONFIG, tag="rank1", fresh=False)
    for i in range(6):
        (rank0 if i % 2 == 0 else rank1).write(f"clip{i:02d}", clip_arrays(i))
    rank1.close()
    rank0.finalize()
    merged, reference = FeatureReader(path, CONFIG), FeatureReader(single, CONFIG)
    assert merged.ids() == reference.ids()
    for clip_id in reference.ids():
        for name, array in reference.read(clip_id).items():
            np.testing.assert_array_equal(merged.read(clip_id)[name], array)
    assert not (tmp_path / "f.h5.partial").exists()


def test_writer_rebuilds_a_finished_file(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0, 1])
    with FeatureWriter(path, CONFIG) as w:
        assert w.done_ids() == set()
        assert not path.exists()  # a stale finished file never reads as complete meanwhile
        w.write("clip07", clip_arrays(7))
        w.finalize()
    assert FeatureReader(path, CONFIG).ids() == ["clip07"]


def test_unreadable_partial_starts_over(tmp_path):
    path = tmp_path / "f.h5"
    (tmp_path / "f.h5.partial").write_bytes(b"not a chunk directory")
    with FeatureWriter(path, CONFIG) as w:
        assert w.done_ids() == set()
        w.write("clip00", clip_arrays(0))
        w.finalize()
    assert FeatureReader(path, CONFIG).ids() == ["clip00"]


# --------------------------------------------------------------------------- pickling


def test_reader_pickles_and_reads_after_unpickling(tmp_path):
    path = tmp_path / "f.h5"
    write_file(path, [0, 1])
    r = FeatureReader(path, CONFIG)
    r.read("clip00")  # handle open in the parent
    clone = pickle.loads(pickle.dumps(r))
    assert clone.ids() == ["clip00", "clip01"]
    assert clone.config == CONFIG
    np.testing.assert_array_equal(clone.read("clip01")["frames"], clip_arrays(1)["frames"])
    assert "clip00" in clone
    np.testing.assert_array_equal(r.read("clip00")["mel"], clip_arrays(0)["mel"])  # the original still works
    # closed readers reopen lazily too
    clone.close()
    np.testing.assert_array_equal(clone.read("clip00")["frames"], clip_arrays(0)["frames"])
    clone.close()
    r.close()


# --------------------------------------------------------------------------- tables


def test_table_round_trip(tmp_path):
    path = tmp_path / "models" / "preds.h5"
    columns = {
        "clip_id": ["a", "b", "ç"],
        "pred": np.array([0.5, -1.25, 3.0], dtype=np.float32),
        "count": np.array([1, 2, 3], dtype=np.int64),
    }
    config = {"teacher": {"mask": "learned", "layers": np.int64(1)}, "classes": ("neg", "pos")}
    write_table(path, columns, config)
    assert path.is_file() and not (path.parent / "preds.h5.partial").exists()
    got, got_config = read_table(path, stage="teacher")
    assert set(got) == {"clip_id", "pred", "count"}
    assert got["clip_id"] == ["a", "b", "ç"]
    np.testing.assert_array_equal(got["pred"], [0.5, -1.25, 3.0])
    assert got["pred"].dtype == np.float32 and got["count"].dtype == np.int64
    np.testing.assert_array_equal(got["count"], [1, 2, 3])
    assert got_config == {"teacher": {"mask": "learned", "layers": 1}, "classes": ["neg", "pos"]}


def test_table_unequal_columns_raise(tmp_path):
    path = tmp_path / "t.h5"
    with pytest.raises(ValueError, match=r"differ in length: \{'a': 2, 'b': 3\}"):
        write_table(path, {"a": ["x", "y"], "b": np.zeros(3)}, {})
    assert not path.exists()


def test_read_table_missing(tmp_path):
    with pytest.raises(StoreError, match=r"not found: run `dvc repro teacher`"):
        read_table(tmp_path / "t.h5", stage="teacher")


# --------------------------------------------------------------------------- config_diff


def test_config_diff_nested():
    recorded = {"clip": {"model": "A", "pretrained": "", "deep": {"x": 1, "y": 2}}, "fps": 8, "same": [1, 2],
                "gone": 1, "shape": {"a": 1}}
    requested = {"clip": {"model": "B", "pretrained": "", "deep": {"x": 1, "y": 3}}, "fps": 8, "same": [1, 2],
                 "new": "n", "shape": 5}
    assert config_diff(recorded, requested) == {
        "clip.model": ("A", "B"),
        "clip.deep.y": (2, 3),
        "gone": (1, "<absent>"),
        "new": ("<absent>", "n"),
        "shape": ({"a": 1}, 5),
    }
    assert config_diff(recorded, recorded) == {}
    assert list(config_diff({"b": 1, "a": 1}, {"b": 2, "a": 2})) == ["a", "b"]  # sorted keys
