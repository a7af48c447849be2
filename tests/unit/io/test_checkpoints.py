"""Checkpoint reading, detection, loading and conversion, including the errors a user can cause."""

import pickle
import shutil

import pytest
import torch

from fusionframes.errors import CheckpointError
from fusionframes.io.checkpoints import convert, inspect, load_model
from fusionframes.io.detect import projections_release
from fusionframes.io.files import read_checkpoint

FILES = [
    ("k10/kandinsky_video.pt", "1.0", "keyframe"),
    ("k10/kandinsky_video_interpolation.pt", "1.0", "interpolation"),
    ("k10/movq.pt", "1.0", "movq"),
    ("k11/t2v.pt", "1.1", "keyframe"),
    ("k11/interpolation.pt", "1.1", "interpolation"),
    ("k11/movq.pt", "1.0", "movq"),  # the image MoVQ is the same model in both releases
    ("k11/video_movq.pt", "1.1", "video_movq"),
    ("k11/t5_projections.pt", "1.1", "text_projections"),
]


@pytest.mark.parametrize("relative,release,kind", FILES)
def test_release_and_kind_are_detected_from_the_keys(golden, relative, release, kind):
    info = inspect(golden / "models" / relative)
    assert (info.release, info.kind) == (release, kind)


@pytest.mark.parametrize("relative,release,kind", FILES)
def test_the_files_holding_text_projections_are_told_apart(golden, relative, release, kind):
    expected = {"k10/kandinsky_video.pt": "1.0", "k11/t5_projections.pt": "1.1"}.get(relative)
    assert projections_release(inspect(golden / "models" / relative)) == expected


def test_a_pre_zip_torch_file_is_read_without_mmap(tmp_path):
    torch.save({"weight": torch.arange(3.0)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(tmp_path / "old.pt")["weight"], torch.arange(3.0))


def test_loaded_unet_carries_its_null_embedding_and_is_frozen(golden):
    loaded = load_model(golden / "models" / "k11" / "t2v.pt")
    assert loaded.model.null_embedding.shape == (loaded.config.context_dim,)
    assert loaded.model.null_embedding.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())  # fp16 file, fp32 by default


def test_wrong_kind_of_file_names_what_it_is(golden):
    with pytest.raises(CheckpointError, match=r"movq.pt is an image MoVQ.*a keyframe U-Net .*was expected"):
        load_model(golden / "models" / "k11" / "movq.pt", expected_kind="keyframe")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "t2v.pt")


def test_truncated_file_is_a_clear_error(golden, tmp_path):
    data = (golden / "models" / "k11" / "t2v.pt").read_bytes()
    (tmp_path / "t2v.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_model(tmp_path / "t2v.pt")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = _RunsCode()
    payload.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"unet": payload}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        read_checkpoint(path)
    assert not marker.exists()


def _bad_files(folder):
    """(name, writer, message) for every kind of malformed file a user can hand a loader."""
    marker = folder / "pwned"
    payload = _RunsCode()
    payload.marker = marker
    link_target = folder / "passwd"
    link_target.write_text("root:x:0:0:root:/root:/bin/bash\n")
    return marker, [
        ("empty.pt", lambda p: p.write_bytes(b""), "is empty \\(0 bytes\\)"),
        ("text.pt", lambda p: p.symlink_to(link_target), "is not a PyTorch checkpoint: it starts with 'root:x"),
        ("binary.pt", lambda p: p.write_bytes(bytes(range(7, 64))), "is not a PyTorch checkpoint: it starts with"),
        ("bare_tensor.pt", lambda p: torch.save(torch.zeros(3), p), "expected a dict of tensors, found Tensor"),
        ("list.pt", lambda p: torch.save([torch.zeros(3)], p), "expected a dict of tensors, found list"),
        ("numbers.pt", lambda p: torch.save({"a": 1, "b": torch.zeros(1)}, p), "entry 'a' holds a int, not a tensor"),
        ("nested.pt", lambda p: torch.save({"unet": {"x": {"y": torch.zeros(1)}}}, p),
         "entry 'unet.x' holds a dict, not a tensor"),
        ("raw_pickle.pt", lambda p: p.write_bytes(pickle.dumps(payload)), "refused to load: .* \\(posix.system\\)"),
        ("legacy.pt", lambda p: torch.save({"a": payload}, p, _use_new_zipfile_serialization=False),
         "refused to load: .* \\(posix.system\\)"),
        ("zip.pt", lambda p: torch.save({"a": payload}, p), "refused to load: .* \\(posix.system\\)"),
    ]


def test_every_malformed_file_is_a_clear_error_and_runs_no_code(tmp_path):
    marker, cases = _bad_files(tmp_path)
    for name, write, message in cases:
        path = tmp_path / name
        write(path)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(path)
        with pytest.raises(CheckpointError, match=message):  # the loaders, the projections: the same reader
            inspect(path)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_config_list_the_keys(golden, tmp_path):
    # the tiny checkpoint without its configs.json falls back to the official (full-size) configuration
    shutil.copy(golden / "models" / "k11" / "t2v.pt", tmp_path / "t2v.pt")
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "t2v.pt")
    message = str(error.value)
    assert "do not match the model configuration" in message
    assert "shape mismatches" in message and "configs.json" in message


@pytest.mark.parametrize("relative", ["k10/kandinsky_video.pt", "k11/t2v.pt", "k11/video_movq.pt",
                                      "k11/t5_projections.pt"])
def test_convert_writes_verified_safetensors_that_load_identically(golden, tmp_path, relative):
    source = golden / "models" / relative
    folder = tmp_path / source.parent.name
    folder.mkdir()
    shutil.copy(source.parent / "configs.json", folder / "configs.json")
    target = folder / (source.stem + ".safetensors")
    count = convert(source, target)
    assert count > 0 and target.is_file()
    original, copy = inspect(source), inspect(target)
    assert (copy.release, copy.kind) == (original.release, original.kind)
    assert set(copy.weights) == set(original.weights)
    for key, tensor in original.weights.items():
        assert torch.equal(copy.weights[key], tensor)
    if original.kind in ("keyframe", "video_movq"):
        a = load_model(source).model.state_dict()
        b = load_model(target).model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
