"""gvt shim for transformers' `utils/fetch_hub_objects_for_ci.py`, which the transformers sdist does not ship.

transformers' CI downloads the test images and videos into the working directory beforehand; `url_to_local_path`
returns that local copy when it exists and the URL otherwise. Nothing is fetched here: the suites run offline.
"""

import os

GVT_SHIM = True


def url_to_local_path(url, return_url_if_not_found=True):
    filename = url.split("/")[-1]
    if not os.path.exists(filename) and return_url_if_not_found:
        return url
    return filename
