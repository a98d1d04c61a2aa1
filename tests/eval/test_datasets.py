"""The nine readers on miniature layouts in the release's formats (built by conftest.build_benchmark)."""

from __future__ import annotations

import pytest

from affectrt.eval.datasets import DATASETS, DatasetError, resolve_datasets


def _read(root, key):
    return DATASETS[key].read(root)


def test_basic_emotion_sets(bench_root):
    mer = _read(bench_root, "mer2023")
    assert [s.name for s in mer] == ["sample_00000007", "sample_00000003", "sample_00000011"]  # stored order
    assert [s.gt for s in mer] == ["happy", "neutral", "worried"]
    assert mer[0].subtitle == "subtitle of sample_00000007" and mer[1].subtitle == ""
    assert mer[0].video.name == "sample_00000007.mp4" and mer[2].video.name == "sample_00000011.avi"
    assert mer[0].audio == bench_root / "mer2023-dataset-process" / "audio" / "sample_00000007.wav"
    assert mer[0].face == bench_root / "mer2023-dataset-process" / "openface_face" / "sample_00000007.npy"

    mer24 = _read(bench_root, "mer2024")
    assert [type(s.name) for s in mer24] == [str, str]  # numpy.str_ keys become plain str
    assert mer24[0].subtitle == "字幕 samplenew3_00000001"  # MER2024 reads the chinese column

    iemo = _read(bench_root, "iemocapfour")  # Session 5 only, labels [happy, sad, neutral, anger]
    assert [(s.name, s.gt) for s in iemo] == [
        ("Ses05F_impro01_F000", "happy"),
        ("Ses05M_script02_M003", "anger"),
    ]
    assert iemo[0].video.parent.name == "subvideo-tgt" and iemo[0].audio.parent.name == "subaudio"

    meld = _read(bench_root, "meld")  # [anger, joy, sadness, neutral, disgust, fear, surprise]
    assert [s.gt for s in meld] == ["joy", "neutral", "surprise"]
    assert meld[0].video.parent.name == "subvideo"


def test_sentiment_sets(bench_root):
    mosi = _read(bench_root, "cmumosi")
    assert [s.gt for s in mosi] == [1.4, -2.0, 0.0]
    assert _read(bench_root, "cmumosei")[0].video.parent.name == "subvideo_new"
    assert _read(bench_root, "sims")[0].video.parent.name == "video"
    assert _read(bench_root, "simsv2")[0].video.parent.name == "video_new"


def test_ovmerdplus(bench_root):
    ov = _read(bench_root, "ovmerdplus")
    # test names in subtitle_eng.csv order; labels parsed, "" -> neutral, joined with ", "
    assert [(s.name, s.gt) for s in ov] == [
        ("sample_00000001", "happy, relaxed"),
        ("sample_00000002", "neutral"),
        ("sample_00000004", "Angry"),
    ]
    assert ov[0].subtitle == "sentence sample_00000001"


def test_layout_errors_name_the_file(tmp_path, bench_root):
    with pytest.raises(DatasetError, match="mer2023-dataset-process: no such folder"):
        DATASETS["mer2023"].read(tmp_path)
    d = tmp_path / "meld-process"
    d.mkdir()
    (d / "label.npz").write_bytes((bench_root / "meld-process" / "label.npz").read_bytes())
    with pytest.raises(DatasetError, match="transcription-engchi-polish.csv: subtitle file missing"):
        DATASETS["meld"].read(tmp_path)
    (d / "transcription-engchi-polish.csv").write_text("name,chinese,english\ntest_dia0_utt0,,hi\n")
    with pytest.raises(DatasetError, match="no subtitle row for test clip 'test_dia0_utt1'"):
        DATASETS["meld"].read(tmp_path)


def test_resolve_datasets():
    assert [s.key for s in resolve_datasets(None)] == [
        "mer2023", "mer2024", "meld", "iemocapfour", "cmumosi", "cmumosei", "sims", "simsv2", "ovmerdplus"
    ]  # fmt: skip
    assert [s.key for s in resolve_datasets("OVMERDPlus,iemocap,meld")] == [
        "meld",
        "iemocapfour",
        "ovmerdplus",
    ]
    with pytest.raises(ValueError, match="unknown dataset 'foo'"):
        resolve_datasets("meld,foo")
