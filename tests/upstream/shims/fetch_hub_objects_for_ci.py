"""gvt shim for transformers' `utils/fetch_hub_objects_for_ci.py`, which the transformers sdist does not ship.

transformers' CI downloads the test images, videos and audio into the working directory beforehand, and
`url_to_local_path` returns that local copy when it exists, the URL otherwise. These suites run offline: an image URL
without a local copy gets a synthetic stand-in instead (a deterministic 64 x 48 RGB picture of the same file name and
format, written to a temporary folder), so that tests which only need *an* image (chat templates with image items)
run; videos and audio are still returned as URLs (the tests that need them do not apply to gvt's image processor).
"""

import hashlib
import os
import tempfile

GVT_SHIM = True

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_STAND_IN_DIR = None


def _stand_in_image(filename):
    global _STAND_IN_DIR
    import numpy as np
    from PIL import Image

    if _STAND_IN_DIR is None:
        _STAND_IN_DIR = tempfile.mkdtemp(prefix="gvt-upstream-images-")
    path = os.path.join(_STAND_IN_DIR, filename)
    if not os.path.exists(path):
        seed = int.from_bytes(hashlib.sha256(filename.encode()).digest()[:4], "little")
        pixels = np.random.default_rng(seed).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    return path


def url_to_local_path(url, return_url_if_not_found=True):
    filename = url.split("/")[-1]
    if os.path.exists(filename):
        return filename
    if filename.lower().endswith(IMAGE_SUFFIXES):
        return _stand_in_image(filename)
    return url if return_url_if_not_found else filename
