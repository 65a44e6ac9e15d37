"""The image-file model (`NAME-images`): it cuts every image as the run's validation did, pixel for
pixel, refuses a bad row by its index, and `mlflow models serve` answers the digits' val files with
class names as accurately as the run's best val top-1, in a server where `import phiscale` fails."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image
from support.runs import BIN, wait_for

from phiscale.tracking.image_model import decode, ffcv_center_crop, resize_area, torch_center_crop

MEAN, STD = [79.0] * 3, [88.9] * 3  # conf/data/digits.yaml


def val_pixels(loader: str, source, resolution: int, crop_ratio: float) -> np.ndarray:
    """Every digits val image as phiscale's val loader gives it, back in uint8 (N, H, W, 3)."""
    from phiscale.data.loaders import make_val_loader
    from phiscale.models.serving import to_uint8

    batches = make_val_loader(source, loader=loader, batch_size=128, num_workers=1, resolution=resolution,
                              mean=MEAN, std=STD, device="cpu", crop_ratio=crop_ratio)
    return np.concatenate([to_uint8(images, MEAN, STD).permute(0, 2, 3, 1).numpy() for images, _ in batches])


@pytest.mark.parametrize(("loader", "resolution", "crop_ratio"), [("ffcv", 32, 0.875), ("ffcv", 24, 1.0),
                                                                  ("torch", 32, 0.875), ("torch", 40, 0.9)])
def test_each_val_file_is_cut_as_the_runs_val_loader_cut_it(loader, resolution, crop_ratio):
    from phiscale.data.digits import ensure_digits
    from phiscale.data.imagefolder import scan_image_folder

    digits = ensure_digits()
    expected = val_pixels(loader, digits.val_beton if loader == "ffcv" else digits.val_dir, resolution, crop_ratio)
    cut = {"ffcv": ffcv_center_crop, "torch": torch_center_crop}[loader]
    files = [path for path, _ in scan_image_folder(digits.val_dir).samples]  # the .beton's order
    served = np.stack([cut(decode(path.read_bytes(), i), resolution, crop_ratio) for i, path in enumerate(files)])
    assert served.shape == expected.shape == (359, resolution, resolution, 3)
    differs = int((served != expected).any(axis=(1, 2, 3)).sum())
    assert differs == 0, f"{differs} of 359 val images are cut otherwise than data.loader={loader} cuts them"


@pytest.mark.parametrize(("height", "width", "out"), [
    (28, 28, 32), (24, 31, 32), (64, 64, 32), (128, 128, 32), (100, 100, 32), (420, 560, 224),
    (37, 100, 16), (300, 300, 224), (7, 9, 32), (225, 225, 224),
])  # enlarging, 2x and 4x blocks, uneven shrinking, odd shapes
def test_resize_area_is_opencvs_inter_area_as_ffcv_calls_it(height, width, out):
    from ffcv.libffcv import resize_crop

    rng = np.random.default_rng(height * 1000 + width)
    for pixels in (rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                   (rng.integers(0, 4, (height, width, 3)) * 85).astype(np.uint8)):  # flat areas: rounding ties
        expected = np.zeros((out, out, 3), np.uint8)
        resize_crop(pixels, 0, height, 0, width, expected)
        assert np.array_equal(resize_area(pixels, out, out), expected), f"{height}x{width} -> {out}"


def test_a_row_that_is_no_image_is_refused_with_its_index():
    png = io.BytesIO()
    Image.new("L", (40, 30), 128).save(png, format="PNG")
    assert decode(png.getvalue(), 0).mode == "RGB", "a grey PNG is read as RGB"
    assert decode(base64.b64encode(png.getvalue()).decode(), 0).size == (40, 30), "base64 text is decoded"
    for row, bad, words in [(3, b"not an image", "row 3: 'image' is not an image file"),
                            (7, png.getvalue()[:60], "row 7: 'image' is a broken image file"),
                            (2, "%%%", "row 2: 'image' is neither image bytes nor base64"),
                            (5, 42, "row 5: 'image' holds int")]:
        with pytest.raises(MlflowException, match=words) as raised:
            decode(bad, row)
        assert raised.value.get_http_status_code() == 400 and "\n" not in raised.value.message
    with pytest.raises(ValueError, match="has no 0.875 centre crop"):
        ffcv_center_crop(Image.new("RGB", (1, 1)), 32, 0.875)


# ------------------------------------------------------------------ served for real -------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, rows: list[bytes], params: dict | None = None) -> tuple[int, dict]:
    """POST rows of image bytes as MLflow's docs say: base64 in dataframe_split's column `image`."""
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(r).decode()] for r in rows]}}
    if params:
        body["params"] = params
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def pinged(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.background("registered-digits")  # reads the run trained in the background queue
def test_mlflow_models_serve_answers_the_digits_val_files_with_the_runs_accuracy(registered_digits,
                                                                                 without_phiscale, tmp_path):
    from phiscale.data.digits import ensure_digits
    from phiscale.data.imagefolder import scan_image_folder

    client = MlflowClient(registered_digits.uri)
    tensor = client.get_model_version_by_alias("digits-net", "best")
    images = client.get_model_version_by_alias("digits-net-images", "best")
    assert images.run_id == tensor.run_id and images.tags["phiscale.twin_model_id"] == tensor.source[len("models:/"):]
    best = max(m.value for m in client.get_metric_history(tensor.run_id, "val/top1_best"))

    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered_digits.uri, "PYTHONPATH": str(without_phiscale),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # it execs `uvicorn` from PATH
    with open(log, "w") as out:
        server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", "models:/digits-net-images@best",
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def ready() -> bool:
            if server.poll() is not None:
                pytest.fail(f"mlflow models serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
            return pinged(port)

        wait_for(ready, 180, f"mlflow models serve answering /ping on port {port}",
                 details=lambda: log.read_text()[-3000:])
        samples = scan_image_folder(ensure_digits(betons=False).val_dir).samples
        classes = scan_image_folder(ensure_digits(betons=False).val_dir).classes
        status, answer = post(port, [path.read_bytes() for path, _ in samples])
        assert status == 200, answer
        labels = [row["label"] for row in answer["predictions"]]
        accuracy = sum(label == classes[y] for label, (_, y) in zip(labels, samples, strict=True)) / len(samples)
        print(f"\nserved: {len(samples)} val files, accuracy {accuracy:.4f}; the run's best val top-1 {best:.4f}")
        assert abs(accuracy - best) <= 0.01, f"served accuracy {accuracy:.4f}, the run's best val top-1 {best:.4f}"
        first = answer["predictions"][0]
        assert len(first["top_k"]) == 5 and first["top_k"][0] == {"label": first["label"],
                                                                   "probability": first["probability"]}

        # Any size, grey or colour, JPEG or PNG; k as a request param.
        grey = io.BytesIO()
        Image.open(samples[0][0]).convert("L").resize((90, 70)).save(grey, format="PNG")
        status, answer = post(port, [grey.getvalue(), samples[1][0].read_bytes()], params={"k": 2})
        assert status == 200 and [len(row["top_k"]) for row in answer["predictions"]] == [2, 2], answer

        rows = [path.read_bytes() for path, _ in samples[:4]]
        rows[2] = b"\xff\xd8\xff\xe0 a truncated JPEG"
        status, answer = post(port, rows)
        assert status == 400 and "row 2:" in answer["message"], (status, answer)
        assert pinged(port) and post(port, rows[:2])[0] == 200, "the server goes on serving after a bad row"
        assert "Traceback" not in log.read_text(), "a bad row is one line in the server's log, not a traceback"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
