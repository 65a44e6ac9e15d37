"""A phiscale run's classifier as MLflow serves an image model: encoded image files in, class names out.

This file is MLflow "models from code" (https://mlflow.org/docs/latest/ml/model/models-from-code/):
it is copied into the logged model `NAME-images` and run there, so it imports only numpy, pandas,
pillow, torch and mlflow, never phiscale. Its network is the run's tensor model (uint8 (N, 3, H, W) in,
logits out, the normalisation inside), its torch.export archive kept as the artifact `network`; its model_config says how the
run's validation cut its images, which this file repeats exactly:

- `resize: ffcv` (data.loader=ffcv): FFCV's `CenterCropRGBImageDecoder`, the centre square of side
  int(crop_ratio x shorter side) resized to the resolution with OpenCV's INTER_AREA, whose integer
  and float arithmetic `resize_area` repeats (OpenCV 4.x imgproc/src/resize.cpp), pixel for pixel.
- `resize: torch` (data.loader=torch): the shorter side to int(resolution / crop_ratio) with PIL's
  bilinear filter, then the centre crop (torchvision's Resize + CenterCrop), as phiscale's
  `data.torch_loaders.center_crop` does.
"""

from __future__ import annotations

import io
import math

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from PIL import Image, UnidentifiedImageError

DEFAULT_TOP_K = 5
BATCH = 64  # images per forward pass: memory stays flat whatever a request holds
COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights as integers out of 2048
COEF_SCALE = 1 << COEF_BITS


def bad_input(message: str) -> MlflowException:
    """MLflow's scoring server answers an INVALID_PARAMETER_VALUE with HTTP 400 and this message."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def decode(data, row: int) -> Image.Image:
    """One row's encoded image (JPEG, PNG, ...; grey or colour) as RGB; a bad row names its index."""
    if isinstance(data, str):  # a binary column that reached the model still base64-encoded
        import base64

        try:
            data = base64.b64decode(data, validate=True)
        except ValueError as err:
            raise bad_input(f"row {row}: 'image' is neither image bytes nor base64 ({err})") from None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise bad_input(f"row {row}: 'image' holds {type(data).__name__}, not encoded image bytes")
    data = bytes(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise bad_input(f"row {row}: 'image' is not an image file PIL reads ({len(data)} bytes, "
                        f"starting {data[:8]!r}): send JPEG or PNG bytes") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types for a broken file
        detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise bad_input(f"row {row}: 'image' is a broken image file ({detail})") from None


# ------------------------------------------------------------------ OpenCV's INTER_AREA, repeated -------
def _area_table(src: int, dst: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's computeResizeAreaTab as a (dst, taps) table of source indices and float32 weights
    (weight 0 pads a short row: adding 0.0 leaves a float sum as it was)."""
    rows = []
    for d in range(dst):
        fsx1 = d * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, src - 1)
        sx1 = min(sx1, sx2)
        taps = []
        if sx1 - fsx1 > 1e-3:
            taps.append((sx1 - 1, np.float32((sx1 - fsx1) / cell)))
        taps += [(s, np.float32(1.0 / cell)) for s in range(sx1, sx2)]
        if fsx2 - sx2 > 1e-3:
            taps.append((sx2, np.float32(min(min(fsx2 - sx2, 1.0), cell) / cell)))
        rows.append(taps)
    width = max(len(t) for t in rows)
    index = np.zeros((dst, width), np.int64)
    weight = np.zeros((dst, width), np.float32)
    for d, taps in enumerate(rows):
        for k, (s, w) in enumerate(taps):
            index[d, k], weight[d, k] = s, w
    return index, weight


def _shrink_by_area(img: np.ndarray, out_h: int, out_w: int, scale_y: float, scale_x: float) -> np.ndarray:
    """OpenCV's resizeArea_ for uint8: float32 sums, in its order, rounded half to even."""
    xi, xw = _area_table(img.shape[1], out_w, scale_x)
    yi, yw = _area_table(img.shape[0], out_h, scale_y)
    src = img.astype(np.float32)
    rows = np.zeros((img.shape[0], out_w, img.shape[2]), np.float32)
    for k in range(xi.shape[1]):
        rows = rows + src[:, xi[:, k], :] * xw[None, :, k, None]
    total = np.zeros((out_h, out_w, img.shape[2]), np.float32)
    for k in range(yi.shape[1]):
        total = total + yw[:, k, None, None] * rows[yi[:, k]]
    return np.clip(np.rint(total), 0, 255).astype(np.uint8)


def _shrink_by_blocks(img: np.ndarray, out_h: int, out_w: int, sy: int, sx: int) -> np.ndarray:
    """OpenCV's resizeAreaFast_ (an integer factor): 2x2 blocks round half up, others via float32."""
    blocks = img.reshape(out_h, sy, out_w, sx, img.shape[2]).astype(np.int64).sum(axis=(1, 3))
    if sy == 2 and sx == 2:
        return ((blocks + 2) >> 2).astype(np.uint8)
    scaled = blocks.astype(np.float32) * np.float32(1.0 / (sx * sy))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _linear_area_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """INTER_AREA's enlarging case: OpenCV's bilinear taps with its area offsets, as int16 weights
    out of 2048. Returns (first source index, w0, w1, first index of the one-tap tail)."""
    inv_scale = dst / src
    scale = 1.0 / inv_scale
    first = np.zeros(dst, np.int64)
    w0, w1 = np.zeros(dst, np.int64), np.zeros(dst, np.int64)
    tail = dst
    for d in range(dst):
        s = math.floor(d * scale)
        f = np.float32((d + 1) - (s + 1) * inv_scale)
        f = np.float32(0.0) if f <= 0 else np.float32(f - np.float32(math.floor(f)))
        if s + 1 >= src:
            tail = min(tail, d)
            if s >= src - 1:
                f, s = np.float32(0.0), src - 1
        first[d] = s
        w0[d] = int(np.rint(np.float32(np.float32(1.0) - f) * np.float32(COEF_SCALE)))
        w1[d] = int(np.rint(f * np.float32(COEF_SCALE)))
    return first, w0, w1, tail


def _enlarge_by_area(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """OpenCV's resizeGeneric_ with INTER_AREA's linear taps for uint8, in its fixed point."""
    h, w = img.shape[:2]
    xs, xa0, xa1, xtail = _linear_area_taps(w, out_w)
    ys, yb0, yb1, _ = _linear_area_taps(h, out_h)
    src = img.astype(np.int64)
    right = np.minimum(xs + 1, w - 1)
    rows = src[:, xs, :] * xa0[None, :, None] + src[:, right, :] * xa1[None, :, None]
    rows[:, xtail:, :] = src[:, xs[xtail:], :] * COEF_SCALE  # the one-tap tail at the right edge
    top, bottom = rows[ys], rows[np.minimum(ys + 1, h - 1)]
    b0, b1 = yb0[:, None, None], yb1[:, None, None]
    out = (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def resize_area(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """`cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)` for a uint8 HWC image."""
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img.copy()
    scale_x, scale_y = 1.0 / (out_w / w), 1.0 / (out_h / h)
    if scale_x >= 1 and scale_y >= 1:
        ix, iy = round(scale_x), round(scale_y)
        if abs(scale_x - ix) < np.finfo(float).eps and abs(scale_y - iy) < np.finfo(float).eps:
            return _shrink_by_blocks(img, out_h, out_w, iy, ix)
        return _shrink_by_area(img, out_h, out_w, scale_y, scale_x)
    return _enlarge_by_area(img, out_h, out_w)


# ------------------------------------------------------------------ the two validation crops -----------
def ffcv_center_crop(image: Image.Image, resolution: int, crop_ratio: float) -> np.ndarray:
    """FFCV's CenterCropRGBImageDecoder: side int(ratio x shorter side), centred, INTER_AREA-resized."""
    pixels = np.asarray(image)
    h, w = pixels.shape[:2]
    side = int(crop_ratio * min(h, w))
    if side < 1:
        raise ValueError(f"a {w}x{h} image has no {crop_ratio:g} centre crop: send one at least 2 px a side")
    top, left = (h - side) // 2, (w - side) // 2
    return resize_area(np.ascontiguousarray(pixels[top:top + side, left:left + side]), resolution, resolution)


def torch_center_crop(image: Image.Image, resolution: int, crop_ratio: float) -> np.ndarray:
    """Shorter side to int(resolution / ratio), bilinear; the centre resolution^2 (Resize + CenterCrop)."""
    short = int(resolution / crop_ratio)
    width, height = image.size
    size = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    image = image.resize(size, Image.BILINEAR)
    left, top = round((size[0] - resolution) / 2.0), round((size[1] - resolution) / 2.0)
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)))


CROPS = {"ffcv": ffcv_center_crop, "torch": torch_center_crop}


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """DataFrame column `image` (encoded bytes) -> per row `label`, `probability`, `top_k`."""

    def load_context(self, context):
        config = dict(context.model_config or {})
        self.class_names = [str(c) for c in config["class_names"]]
        self.resolution = int(config["resolution"])
        self.crop_ratio = float(config["crop_ratio"])
        self.crop = CROPS[config["resize"]]
        self.network = torch.export.load(context.artifacts["network"]).module()

    def images(self, model_input) -> np.ndarray:
        """The column `image`, decoded and cut as the run's validation did: uint8 (N, 3, R, R)."""
        column = model_input["image"] if isinstance(model_input, pd.DataFrame) else model_input
        cut = [self.cut(data, row) for row, data in enumerate(column)]
        return np.stack(cut).transpose(0, 3, 1, 2).copy() if cut else np.zeros((0, 3, self.resolution,
                                                                                self.resolution), np.uint8)

    def cut(self, data, row: int) -> np.ndarray:
        try:
            return self.crop(decode(data, row), self.resolution, self.crop_ratio)
        except ValueError as err:
            raise bad_input(f"row {row}: {err}") from None

    def top_k(self, params) -> int:
        k = (params or {}).get("k", DEFAULT_TOP_K)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise bad_input(f"params k={k!r}: ask for at least one class, e.g. k=5")
        return min(int(k), len(self.class_names))

    def predict(self, context, model_input: pd.DataFrame, params=None):  # the hint: no inference, no warning
        k = self.top_k(params)
        if isinstance(model_input, pd.DataFrame) and "image" not in model_input.columns:
            raise bad_input("the input needs a column 'image' of encoded image files")
        batch = self.images(model_input)
        answers = []
        with torch.no_grad():
            for start in range(0, len(batch), BATCH):
                logits = self.network(torch.from_numpy(batch[start:start + BATCH]))
                probs, classes = torch.softmax(logits.float(), dim=1).topk(k, dim=1)
                for p_row, c_row in zip(probs.tolist(), classes.tolist(), strict=True):
                    top = [{"label": self.class_names[c], "probability": p} for p, c in zip(p_row, c_row, strict=True)]
                    answers.append({"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top})
        return answers


mlflow.models.set_model(ImageClassifier())
