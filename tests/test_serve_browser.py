"""``skipdit serve`` as a user meets it: a real server in a subprocess, driven by headless Chromium and by
``gradio_client``."""

from __future__ import annotations

import pytest
from PIL import Image, ImageStat

from . import browser

pytest.importorskip("gradio", reason="skipdit serve needs the demo extra: pip install 'skipdit[demo]'")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with browser.server(log=tmp_path_factory.mktemp("serve") / "serve.log") as address:
        yield address


def test_the_page_in_a_browser(url, tmp_path):
    if not (browser.CHROMIUM.is_file() and browser.CHROMEDRIVER.is_file()):
        pytest.skip(f"no browser: {browser.CHROMIUM} and {browser.CHROMEDRIVER} are not installed "
                    "(apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    shot = tmp_path / "serve.png"
    text = browser.screenshot(url, shot, model="digits/Skip-DiT", condition="3", cache="skip:N=2", seeds="0-3",
                              steps=10)
    assert "Measured speed-up" in text and "(ideal 1.60x" in text and "5 full / 5 cached steps of 10" in text
    image = Image.open(shot).convert("L")
    assert image.size[0] >= 1000 and ImageStat.Stat(image).stddev[0] > 20  # a page, not a blank window


def test_the_generate_endpoint_with_gradio_client(url, tmp_path):
    from gradio_client import Client

    client = Client(url, download_files=str(tmp_path), verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]
    assert [p["parameter_name"] for p in api["parameters"]] == ["model", "condition", "cache", "seeds", "sampler",
                                                                "steps"]
    cached, uncached, stats = client.predict(model="digits/Skip-DiT", condition="1,2", cache="skip:N=2", seeds="0-3",
                                             sampler="ddim", steps=10, api_name="/generate")
    assert Image.open(cached).size == Image.open(uncached).size
    assert (stats["full_steps"], stats["cached_steps"], stats["ideal_speedup"]) == (5, 5, 1.6)
    assert stats["measured_speedup"] > 0 and 10 < stats["psnr"] < 100 and stats["seeds"] == [0, 1, 2, 3]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="^invalid seeds 'x': use numbers and ranges like 0-7,10$"):
        client.predict(model="digits/Skip-DiT", condition="3", cache="skip:N=2", seeds="x", sampler="ddim", steps=10,
                       api_name="/generate")
