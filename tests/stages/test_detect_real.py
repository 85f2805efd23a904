"""Detectors for real footage: ONNX (YOLO-style layouts, onnxruntime) and OpenCV's HOG people detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hmrflow.pipeline.config import DetectConfig, load_config
from hmrflow.pipeline.errors import CheckpointError, ConfigError
from hmrflow.pipeline.types import MASK_RES, FrameBatch
from hmrflow.stages.detect.hog_adapter import BOX_INSET, HogDetector, drop_contained, tighten
from hmrflow.stages.detect.onnx_adapter import OnnxDetector, resolve_layout
from hmrflow.stages.detect.stage import SYNTHETIC_DETECTOR_NOTE, DetectStage, detector_notes

ort = pytest.importorskip("onnxruntime", reason="detect.kind=onnx needs onnxruntime (the onnx extra)")
pytest.importorskip("onnx", reason="exporting the test models needs the onnx package")


class Constant(nn.Module):
    """Outputs fixed tensors whatever the image (the input still feeds the graph)."""

    def __init__(self, *outs: torch.Tensor) -> None:
        super().__init__()
        self.outs = [nn.Parameter(o, requires_grad=False) for o in outs]
        for i, o in enumerate(self.outs):
            self.register_parameter(f"o{i}", o)

    def forward(self, x: torch.Tensor):
        zero = x.mean() * 0.0
        res = tuple(o.expand(x.shape[0], *o.shape[1:]) + zero for o in self.outs)
        return res if len(res) > 1 else res[0]


def export(tmp_path: Path, name: str, *outs: torch.Tensor, size=(64, 64)) -> Path:
    path = tmp_path / f"{name}.onnx"
    names = ["output0", "output1"][: len(outs)]
    torch.onnx.export(
        Constant(*outs),
        (torch.zeros(1, 3, *size),),
        str(path),
        input_names=["images"],
        output_names=names,
        dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        opset_version=17,
        dynamo=False,
    )
    return path


def frames(n: int = 2, h: int = 64, w: int = 128) -> FrameBatch:
    imgs = np.zeros((n, h, w, 3), np.uint8)
    return FrameBatch("v", np.arange(n), np.arange(n) / 30.0, imgs)


# A 128x64 frame in a 64x64 input: scale 0.5, resized to 64x32, centred: 16 px of grey above.
# The person candidate (input cx 32, cy 32, w 20, h 16) is input box (22, 24, 42, 40), which is
# frame edge box (44, 16, 84, 48), i.e. pixel-centre box (43.5, 15.5, 83.5, 47.5).
WANT_BOX = [43.5, 15.5, 83.5, 47.5]


def v8_pred(n_mask: int = 0) -> torch.Tensor:
    pred = torch.zeros(1, 4 + 80 + n_mask, 3)
    pred[0, :4, 0] = torch.tensor([32.0, 32.0, 20.0, 16.0])
    pred[0, 4 + 0, 0] = 0.9  # person
    pred[0, :4, 1] = torch.tensor([33.0, 32.0, 20.0, 16.0])  # the same person, weaker: NMS drops it
    pred[0, 4 + 0, 1] = 0.8
    pred[0, :4, 2] = torch.tensor([10.0, 30.0, 8.0, 10.0])  # a person score, but another class is stronger
    pred[0, 4 + 0, 2] = 0.6
    pred[0, 4 + 5, 2] = 0.95
    if n_mask:
        pred[0, 84:, :] = torch.tensor([1.0, 0.0])[:, None]
    return pred


def test_yolov8_detection_layout_decodes_to_the_hand_computed_box(tmp_path: Path) -> None:
    det = OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(export(tmp_path, "v8", v8_pred()))))
    out = det(frames())
    assert det.layout == "yolov8" and len(out) == 2
    for fd in out:
        assert fd.boxes_xyxy.tolist() == [WANT_BOX]
        assert fd.scores.tolist() == pytest.approx([0.9])
        assert fd.masks.shape == (1, MASK_RES, MASK_RES) and fd.masks.all()  # no prototypes: box masks


def test_yolov8_segmentation_masks_come_from_the_prototypes(tmp_path: Path) -> None:
    protos = torch.full((1, 2, 16, 16), -1.0)
    protos[0, 0, :, :8] = 1.0  # prototype 0: the left half of the input (x < 32)
    path = export(tmp_path, "v8seg", v8_pred(n_mask=2), protos)
    det = OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(path)))
    (fd, _) = det(frames())
    assert det.has_masks and det.n_mask == 2
    assert fd.boxes_xyxy.tolist() == [WANT_BOX]
    # box x 22..42 in the input: mask columns whose sample lies left of x = 32 are the person
    t = (np.arange(MASK_RES) + 0.5) / MASK_RES
    want_cols = 22 + t * 20 < 32
    assert np.array_equal(fd.masks[0], np.broadcast_to(want_cols, (MASK_RES, MASK_RES)))


def test_yolov5_layout_multiplies_objectness_and_class_score(tmp_path: Path) -> None:
    pred = torch.zeros(1, 3, 85)
    pred[0, 0, :5] = torch.tensor([32.0, 32.0, 20.0, 16.0, 0.9])
    pred[0, 0, 5] = 0.8  # 0.72
    pred[0, 1, :5] = torch.tensor([80.0, 32.0, 10.0, 10.0, 0.4])
    pred[0, 1, 5] = 0.9  # 0.36 < 0.5: dropped
    det = OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(export(tmp_path, "v5", pred))))
    (fd, _) = det(frames())
    assert det.layout == "yolov5"
    assert fd.boxes_xyxy.tolist() == [WANT_BOX]
    assert fd.scores.tolist() == pytest.approx([0.72])


def test_end2end_rows_are_taken_as_they_are(tmp_path: Path) -> None:
    pred = torch.zeros(1, 4, 6)
    pred[0, 0] = torch.tensor([22.0, 24.0, 42.0, 40.0, 0.85, 0.0])
    pred[0, 1] = torch.tensor([0.0, 20.0, 10.0, 30.0, 0.9, 2.0])  # a car
    pred[0, 2] = torch.tensor([0.0, 20.0, 10.0, 30.0, 0.3, 0.0])  # below the threshold
    det = OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(export(tmp_path, "e2e", pred))))
    (fd, _) = det(frames())
    assert det.layout == "end2end"
    assert fd.boxes_xyxy.tolist() == [WANT_BOX] and fd.scores.tolist() == pytest.approx([0.85])


def test_layouts_that_auto_cannot_tell_need_a_name() -> None:
    assert resolve_layout("auto", (1, 84, 8400), 0) == ("yolov8", True)
    assert resolve_layout("auto", (1, 116, 8400), 32) == ("yolov8", True)
    assert resolve_layout("auto", (1, 25200, 85), 0) == ("yolov5", False)
    assert resolve_layout("auto", (1, 25200, 6), 0) == ("yolov5", False)  # one class, thousands of rows
    assert resolve_layout("auto", (1, 300, 6), 0) == ("end2end", False)
    assert resolve_layout("yolov8", (1, 7, 100), 0) == ("yolov8", True)
    with pytest.raises(ConfigError, match="onnx_layout"):
        resolve_layout("auto", (1, 7, 100), 0)


def test_onnx_configuration_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="detect.onnx_path"):
        OnnxDetector(DetectConfig(kind="onnx"))
    with pytest.raises(CheckpointError, match="not found"):
        OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(tmp_path / "missing.onnx")))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="bad.onnx: not a loadable ONNX model"):
        OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(bad)))
    odd = export(tmp_path, "odd", torch.zeros(1, 7, 100))
    with pytest.raises(ConfigError, match="odd.onnx: .*onnx_layout"):  # when loading, if the shape is known
        OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(odd)))(frames())
    with pytest.raises(ConfigError, match="onnx_person_class"):
        OnnxDetector(
            DetectConfig(kind="onnx", onnx_path=str(export(tmp_path, "v8b", v8_pred())), onnx_person_class=99)
        )(frames())


def test_the_exported_bundled_detector_finds_what_the_bundled_one_finds(tmp_path: Path) -> None:
    """The bundled detector exported in the YOLOv8 layout and run by onnxruntime finds the same
    people in a rendered 640x480 frame (boxes within a pixel or two, same scores)."""
    from hmrflow.jobs.synth.clip import load_body_assets
    from hmrflow.jobs.synth.scene import SceneSpec
    from hmrflow.jobs.train.synth_frames import render_scene_frames
    from hmrflow.pipeline.boxes import box_iou_torch
    from hmrflow.stages.detect.onnx_export import export_detector_onnx
    from hmrflow.stages.detect.stage import BundledDetector

    spec = SceneSpec(name="t", seed=424243, people=3, seconds=1.0, fps=5.0, width=640, height=480, walkers=0.0)
    data = render_scene_frames(spec, np.array([1, 3]), load_body_assets())
    fb = FrameBatch("t", np.array([1, 3]), np.array([0.2, 0.6]), data.images)
    bundled = BundledDetector(DetectConfig(device="cpu"))
    path = export_detector_onnx(bundled.model, tmp_path / "bundled.onnx")
    onnx_out = OnnxDetector(DetectConfig(kind="onnx", onnx_path=str(path)))(fb)
    for a, b in zip(bundled(fb), onnx_out):
        assert len(a.boxes_xyxy) == len(b.boxes_xyxy) >= 1
        iou = box_iou_torch(torch.from_numpy(a.boxes_xyxy), torch.from_numpy(b.boxes_xyxy)).numpy()
        assert (iou.max(1) > 0.95).all()
        assert np.allclose(np.sort(a.scores), np.sort(b.scores), atol=0.02)


def test_real_preset_uses_hog_or_the_given_onnx_model() -> None:
    assert load_config("real").detect.kind == "hog"
    assert load_config("real", ["detect.onnx_path=m.onnx"]).detect.kind == "onnx"
    assert load_config("real", ["detect.onnx_path=m.onnx", "detect.kind=hog"]).detect.kind == "hog"
    assert load_config("clip", ["detect.onnx_path=m.onnx"]).detect.kind == "bundled"


def test_bundled_detector_is_noted_once_in_the_log_and_in_every_manifest(caplog) -> None:
    import hmrflow.stages.detect.stage as stage_mod

    assert detector_notes(DetectConfig()) == [SYNTHETIC_DETECTOR_NOTE]
    assert detector_notes(DetectConfig(weights="mine.safetensors")) == []
    assert detector_notes(DetectConfig(kind="hog")) == []
    stage_mod._noted.clear()
    with caplog.at_level("WARNING"):
        DetectStage(DetectConfig()).setup()
        DetectStage(DetectConfig()).setup()
    assert [r.getMessage() for r in caplog.records].count(SYNTHETIC_DETECTOR_NOTE) == 1
    assert "--preset real" in SYNTHETIC_DETECTOR_NOTE and "detect.kind=onnx" in SYNTHETIC_DETECTOR_NOTE


# ------------------------------------------------------------------ HOG
def test_hog_windows_are_tightened_to_the_person() -> None:
    (box,) = tighten(np.array([[100, 50, 64, 128]]))
    assert box.tolist() == pytest.approx(
        [100 + 64 * BOX_INSET[0], 50 + 128 * BOX_INSET[1], 164 - 64 * BOX_INSET[0], 178 - 128 * BOX_INSET[1]]
    )


def test_boxes_inside_a_stronger_one_are_dropped() -> None:
    boxes = np.array([[0, 0, 100, 200], [10, 10, 90, 100], [150, 0, 250, 200]], float)
    keep = drop_contained(boxes, np.array([0.9, 0.95, 0.8]))
    # the upper-body box scores higher, but the whole-body one lies only partly inside it: both stay
    assert sorted(keep.tolist()) == [0, 1, 2]
    keep = drop_contained(boxes, np.array([0.95, 0.9, 0.8]))
    assert sorted(keep.tolist()) == [0, 2]


def test_hog_finds_nothing_on_a_blank_frame_and_handles_tiny_frames() -> None:
    det = HogDetector(DetectConfig(kind="hog"))
    (a, b) = det(frames(h=240, w=320))
    assert len(a.boxes_xyxy) == 0 and a.masks.shape == (0, MASK_RES, MASK_RES)
    (c, _) = det(frames(h=60, w=40))  # smaller than the 64 x 128 window
    assert len(c.boxes_xyxy) == 0


def test_box_masks_replace_person_masks_when_asked() -> None:
    from hmrflow.jobs.synth.clip import load_body_assets
    from hmrflow.jobs.synth.scene import SceneSpec
    from hmrflow.jobs.train.synth_frames import render_scene_frames

    spec = SceneSpec(name="t", seed=424244, people=2, seconds=1.0, fps=5.0, width=320, height=240, walkers=0.0)
    data = render_scene_frames(spec, np.array([2]), load_body_assets())
    fb = FrameBatch("t", np.array([2]), np.array([0.4]), data.images)
    person = DetectStage(DetectConfig(device="cpu"))(fb).detections
    box = DetectStage(DetectConfig(device="cpu", masks="box"))(fb).detections
    assert len(person) == len(box) >= 1 and np.array_equal(person.boxes_xyxy, box.boxes_xyxy)
    assert box.masks.all() and not person.masks.all()


def _torchvision_ops_or_skip():
    """torchvision with working compiled ops, or a skip saying why not (its PyPI wheel cannot
    load them beside some CPU torch builds)."""
    try:
        import torchvision

        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as exc:  # ImportError, or RuntimeError/OSError from the compiled ops
        pytest.skip(f"torchvision's compiled ops do not load here: {type(exc).__name__}: {str(exc)[:120]}")
    return torchvision


@pytest.mark.torchvision
def test_maskrcnn_path_runs_and_keeps_people_only(tmp_path: Path) -> None:
    tv = _torchvision_ops_or_skip()
    from hmrflow.stages.detect.maskrcnn_adapter import MaskRCNNDetector

    torch.manual_seed(0)
    model = tv.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    weights = tmp_path / "maskrcnn.pt"
    torch.save(model.state_dict(), weights)
    det = MaskRCNNDetector(DetectConfig(kind="maskrcnn", weights=str(weights), device="cpu", batch_size=2))
    fb = frames(n=2, h=96, w=128)
    out = det(fb)  # random weights: whatever it finds, in the project's format
    assert len(out) == 2 and all(d.masks.shape[1:] == (MASK_RES, MASK_RES) for d in out)

    full = torch.zeros(3, 1, 96, 128)
    full[:, :, 20:60, 30:50] = 1.0

    def fixed(images):
        return [
            {
                "boxes": torch.tensor([[30.0, 20.0, 50.0, 60.0], [0.0, 0.0, 10.0, 10.0], [30.0, 20.0, 50.0, 60.0]]),
                "labels": torch.tensor([1, 3, 1]),
                "scores": torch.tensor([0.9, 0.99, 0.6]),
                "masks": full,
            }
            for _ in images
        ]

    det.model = fixed
    (a, _) = det(fb)
    assert a.boxes_xyxy.tolist() == [[29.5, 19.5, 49.5, 59.5]] * 2  # the car (label 3) is gone; edge -> centre
    assert a.scores.tolist() == pytest.approx([0.9, 0.6]) and a.masks.all()


def test_a_preset_name_wins_over_a_folder_of_that_name(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "real").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("real").detect.kind == "hog"
