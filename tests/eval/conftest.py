"""Fixtures for the evaluation tests: a miniature emotion-wheel table set whose mapping is easy by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

# Mapping of the miniature tables (checked by hand below):
#   wheels 1-4: happy/happier/happiness/glad/gladly -> positive; sad/sadder/sadness, angry/anger -> negative
#   wheel 5:    happy... -> joy; sad... -> sorrow; angry -> "" (not on wheel 5)
#   neutral -> calm (a synonym) -> on no wheel -> ""; words outside format.csv -> ""
MINI_FORMAT = """name,format
happy,"happier,happiness"
sad,"sadder,sadness"
angry,"anger,angrier"
glad,gladly
neutral,
"""
_ROWS = [("Happy ", "glad, cheerful"), ("sad", "unhappy"), ("angry", "mad"), ("calm", "neutral")]
MINI_WHEEL_1_4 = "level1,level2,level3\nPositive,Happy,Cheerful\nNegative,Sad,Lonely\n,Angry,Mad\n"
MINI_WHEEL_5 = "level1,level2,level3\nJoy,Happy,Glad\nSorrow,Sad,Lonely\n"


def write_mini_tables(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "format.csv").write_text(MINI_FORMAT)
    header = ",".join(f"word_run{i},synonym_run{i}" for i in range(1, 9))
    lines = [header] + [",".join(f'{w},"{s}"' for _ in range(8)) for w, s in _ROWS]
    (d / "synonym.csv").write_text("\n".join(lines) + "\n")
    for k in range(1, 5):
        (d / f"wheel{k}.csv").write_text(MINI_WHEEL_1_4)
    (d / "wheel5.csv").write_text(MINI_WHEEL_5)
    return d


@pytest.fixture(scope="session")
def mini_wheels(tmp_path_factory):
    from affectrt.eval.wheel import EmotionWheels

    return EmotionWheels.load(write_mini_tables(tmp_path_factory.mktemp("wheels")))


# ----- a miniature MER-UniBench root in the release's layouts (MODEL_SPEC §3.2) -----------------------------

# name -> ground truth as each test set stores it; train entries exist too, as in the release's files.
MINI_TEST = {
    "mer2023": {"sample_00000007": "happy", "sample_00000003": "neutral", "sample_00000011": "worried"},
    "mer2024": {"samplenew3_00000001": "sad", "samplenew3_00000002": "angry"},
    "iemocapfour": {"Ses05F_impro01_F000": 0, "Ses05M_script02_M003": 3},  # happy, anger
    "meld": {"test_dia0_utt0": 1, "test_dia0_utt1": 3, "test_dia2_utt0": 6},  # joy, neutral, surprise
    "cmumosi": {"03bSnISJMiM_1": 1.4, "03bSnISJMiM_2": -2.0, "03bSnISJMiM_3": 0.0},
    "cmumosei": {"-3g5yACwYnA_0": 0.6667, "-3g5yACwYnA_1": -1.0},
    "sims": {"video_0003_0006": -0.8, "video_0003_0007": 0.2},
    "simsv2": {"aqgy3_0001_00001": 1.0, "aqgy3_0001_00002": -0.4},
    "ovmerdplus": {
        "sample_00000001": "[happy, relaxed]",
        "sample_00000002": "",
        "sample_00000004": "[Angry]",
    },
}
FOLDERS = {
    "mer2023": ("mer2023-dataset-process", "video", "audio"),
    "mer2024": ("mer2024-dataset-process", "video", "audio"),
    "iemocapfour": ("iemocap-process", "subvideo-tgt", "subaudio"),
    "meld": ("meld-process", "subvideo", "subaudio"),
    "cmumosi": ("cmumosi-process", "subvideo", "subaudio"),
    "cmumosei": ("cmumosei-process", "subvideo_new", "subaudio"),
    "sims": ("sims-process", "video", "audio"),
    "simsv2": ("simsv2-process", "video_new", "audio"),
    "ovmerdplus": ("ovmerdplus-process", "video", "audio"),
}


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _write_clip(path: Path) -> Path:
    """A 1 s, 10 fps H.264 clip (the tests of this folder use the face model; videos exist as in the release)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(10):
            img = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


def _write_wav(path: Path, seed: int) -> None:
    import wave

    import numpy as np

    x = (np.random.default_rng(seed).standard_normal(16000) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(x.tobytes())


def build_benchmark(root: Path, media: bool = True) -> Path:
    """Write the nine ``*-process`` folders with MINI_TEST as their test splits (plus train rows)."""
    import shutil

    import numpy as np

    clip = _write_clip(root / "_clip.mp4") if media else None
    seed = 0
    for key, tests in MINI_TEST.items():
        folder, vdir, adir = FOLDERS[key]
        d = root / folder
        d.mkdir(parents=True)
        names = list(tests)
        train = {f"train_{key}_{i}": v for i, v in enumerate(tests.values())}
        if key in ("mer2023", "mer2024"):
            test1 = {
                (np.str_(n) if key == "mer2024" else n): {"emo": v, "val": 0.0} for n, v in tests.items()
            }
            np.savez_compressed(
                d / "label-6way.npz",
                train_corpus={n: {"emo": v} for n, v in train.items()},
                test1_corpus=test1,
                test2_corpus={},
            )
            sub_file, col = (
                ("transcription-engchi-polish.csv", "english")
                if key == "mer2023"
                else ("transcription_merge.csv", "chinese")
            )
            cols = ["name", col] if key == "mer2024" else ["name", "chinese", "english"]
            rows = [[n, f"字幕 {n}"] if key == "mer2024" else [n, "中文", f"subtitle of {n}"] for n in names]
            rows[1][-1] = ""  # an empty cell is an empty subtitle
            _write_csv(d / sub_file, cols, rows)
        elif key == "iemocapfour":
            whole = {"Ses01F_impro01_F000": {"emo": 2, "val": -10}}
            whole.update({n: {"emo": v, "val": -10} for n, v in tests.items()})
            whole["Ses02M_impro03_M001"] = {"emo": 1, "val": -10}
            np.savez_compressed(d / "label_4way.npz", whole_corpus=whole)
            _write_csv(
                d / "transcription-engchi-polish.csv",
                ["name", "chinese", "english"],
                [[n, "中文", f"subtitle of {n}"] for n in whole],
            )
        elif key == "ovmerdplus":
            _write_csv(d / "subtitle_eng.csv", ["name", "sentence"], [[n, f"sentence {n}"] for n in names])
            _write_csv(d / "ovlabel.csv", ["name", "openset"], [[n, v] for n, v in reversed(tests.items())])
        else:
            entry = (lambda v: {"emo": v, "val": -10}) if key == "meld" else (lambda v: {"emo": 0, "val": v})
            np.savez_compressed(
                d / "label.npz",
                train_corpus={n: entry(v) for n, v in train.items()},
                val_corpus={},
                test_corpus={n: entry(v) for n, v in tests.items()},
            )
            _write_csv(
                d / "transcription-engchi-polish.csv",
                ["name", "chinese", "english"],
                [[n, "中文", f"subtitle of {n}"] for n in [*train, *names]],
            )
        if media:
            for sub in (vdir, adir, "openface_face"):
                (d / sub).mkdir()
            for n in names:
                ext = ".avi" if (key == "mer2023" and n == names[-1]) or key == "iemocapfour" else ".mp4"
                shutil.copyfile(clip, d / vdir / f"{n}{ext}")
                _write_wav(d / adir / f"{n}.wav", seed)
                faces = np.random.default_rng(seed).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
                np.save(d / "openface_face" / f"{n}.npy", faces)
                seed += 1
    return root


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory) -> Path:
    return build_benchmark(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def tiny_judge_dir(tmp_path_factory) -> Path:
    """A random 2-layer Qwen2 'instruct' folder (config, safetensors, small BPE tokenizer.json, template)."""
    pytest.importorskip("transformers")
    import json

    from affectrt.testing.hf_models import bpe_tokenizer, tiny_qwen2

    d = tmp_path_factory.mktemp("judge")
    tiny_qwen2(vocab_size=1024, seed=3).save_pretrained(d)
    bpe_tokenizer(1024).save(str(d / "tokenizer.json"))  # BPE: judge prompts half as long as byte-level
    template = (  # Qwen2.5-Instruct's template, reduced to plain turns (same output for one user turn)
        "{%- if messages[0]['role'] == 'system' %}"
        "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
        "{%- else %}"
        "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- for message in messages %}{%- if message.role == 'user' %}"
        "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
        "{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return d
