"""The doc pages' own Python examples, run with ``requests`` against the fake server.

Each example is the seed text (shared/api/seeds) unchanged but for the base URL and key;
``time.sleep`` advances the fake's manual clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from fakeapi import ManualClock

from viggle_async.testing import FakeViggle, Template, make_mp4, make_png

# 001 (render-create): "On-Demand Render (upload files directly)".
ON_DEMAND = """
import requests

url = "https://apis.viggle.ai/api/render"
headers = {"Authorization": "Bearer YOUR_API_KEY"}

with open("character.png", "rb") as img, open("driving.mp4", "rb") as vid:
    resp = requests.post(
        url,
        headers=headers,
        files={
            "ref_image": ("character.png", img, "image/png"),
            "driving_video": ("driving.mp4", vid, "video/mp4"),
        },
        data={"background_mode": "original"},
    )

data = resp.json()
if "detail" in data:
    print(f"Error {data['detail']['error_code']}: {data['detail']['message']}")
else:
    print(f"Job created: {data['job_id']}")
    print(f"Poll: GET /api/render/{data['job_id']}")
"""

# 001 (render-create): "Reusable Assets Render", with the page's placeholder ids.
REUSABLE = """
import requests

url = "https://apis.viggle.ai/api/render"
headers = {"Authorization": "Bearer YOUR_API_KEY"}

resp = requests.post(
    url,
    headers=headers,
    data={
        "character_id": "char_550e8400e29b41d4",
        "scene_id": "scene_660e8400e29b41d4",
        "background_mode": "original",
    },
)

data = resp.json()
if "detail" in data:
    print(f"Error {data['detail']['error_code']}: {data['detail']['message']}")
else:
    print(f"Job created: {data['job_id']}")
"""

# 002 (home): the On-Demand tab, create then poll without auth, then download.
HOME_ON_DEMAND = """
import requests, time
API_KEY, BASE = "YOUR_API_KEY", "https://apis.viggle.ai"
h = {"Authorization": f"Bearer {API_KEY}"}
job = requests.post(f"{BASE}/api/render", headers=h, files={
    "ref_image": open("character.png", "rb"),
    "driving_video": open("dance.mp4", "rb"),
}).json()
while True:
    s = requests.get(f"{BASE}/api/render/{job['job_id']}").json()
    if s["status"] == "complete": break
    time.sleep(3)
video = requests.get(s["cdn_url"])
open("output.mp4", "wb").write(video.content)
"""

# 002 (home): the Preprocessed tab.
HOME_PREPROCESSED = """
import requests
API_KEY, BASE = "YOUR_API_KEY", "https://apis.viggle.ai"
h = {"Authorization": f"Bearer {API_KEY}"}
char = requests.post(f"{BASE}/api/characters/preprocess", headers=h,
    files={"image": open("character.png", "rb")}, data={"name": "My Character"}).json()
scene = requests.post(f"{BASE}/api/scenes/preprocess", headers=h,
    files={"video": open("dance.mp4", "rb")}, data={"name": "Dance"}).json()
job = requests.post(f"{BASE}/api/render", headers=h, data={
    "character_id": char["character_id"], "scene_id": scene["scene_id"],
}).json()
"""

# 002 (home): the Import Templates tab.
HOME_IMPORT = """
import requests
API_KEY, BASE = "YOUR_API_KEY", "https://apis.viggle.ai"
h = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
scene = requests.post(f"{BASE}/api/scenes/import", headers=h,
    json={"template_id": "TEMPLATE_ID_FROM_VIGGLE"}).json()
"""

# 004 (char-create): the page's example.
CHARACTER = """
import requests

url = "https://apis.viggle.ai/api/characters/preprocess"
headers = {
    "Authorization": "Bearer YOUR_API_KEY",
}
files = {
    "image": ("character.png", open("character.png", "rb"), "image/png"),
}
data = {
    "name": "My Character",
}

response = requests.post(url, headers=headers, files=files, data=data)
result = response.json()

if result.get("error_code"):
    print(f"Error: {result['error_code']} - {result.get('message')}")
else:
    print(f"Character ID: {result['character_id']}")
    print(f"Status: {result['status']}")
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "character.png").write_bytes(make_png())
    (tmp_path / "driving.mp4").write_bytes(make_mp4(4.0))
    (tmp_path / "dance.mp4").write_bytes(make_mp4(6.0))
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def _run(source: str, fake: FakeViggle) -> dict[str, Any]:
    source = source.replace("https://apis.viggle.ai", fake.base_url)
    source = source.replace("YOUR_API_KEY", fake.api_key)
    code = compile(source, "<doc example>", "exec")
    namespace: dict[str, Any] = {}

    def run() -> None:
        # Some examples leave files open (`open(...)` inside `files=`): their bug, not ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            exec(code, namespace)
            for name in ("img", "vid", "files"):
                namespace.pop(name, None)
            gc.collect()

    await asyncio.to_thread(run)
    return namespace


async def test_on_demand_example(fake: FakeViggle, workdir: Path) -> None:
    ns = await _run(ON_DEMAND, fake)
    assert "detail" not in ns["data"]
    assert ns["data"]["status"] == "queued"
    assert fake.balance() == 10_000 - 4
    record = fake.creates[-1]
    assert {p.name: p.filename for p in record.files} == {
        "ref_image": "character.png",
        "driving_video": "driving.mp4",
    }


async def test_reusable_example_reports_the_error(fake: FakeViggle, workdir: Path) -> None:
    ns = await _run(REUSABLE, fake)
    assert ns["resp"].status_code == 400
    assert ns["data"]["detail"]["error_code"] == "CS-ORIV-008"


async def test_home_on_demand_polls_and_downloads(
    fake: FakeViggle, clock: ManualClock, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", clock.advance)
    ns = await _run(HOME_ON_DEMAND, fake)
    assert ns["s"]["status"] == "complete"
    assert (workdir / "output.mp4").stat().st_size == fake.settings.output_bytes
    assert fake.cdn_auth_headers == []  # requests drops nothing it wasn't given
    polls = fake.count("GET", "/api/render/{job_id}")
    # Done at 2 s queue + (5 + 2 x 6) s processing = 19 s: polls at 0, 3, ..., 21 s.
    assert polls == 8


async def test_home_preprocessed_example(fake: FakeViggle, workdir: Path) -> None:
    s = fake.settings
    s.character_pending_s = s.character_processing_s = 0.0
    s.scene_base_s = s.scene_s_per_video_s = 0.0
    ns = await _run(HOME_PREPROCESSED, fake)
    assert ns["job"]["status"] == "queued", ns["job"]
    assert ns["job"]["mode"] == "preprocessed"
    assert fake.balance() == 10_000 - 1 - 6


async def test_home_import_example(fake: FakeViggle, workdir: Path) -> None:
    fake.settings.templates["TEMPLATE_ID_FROM_VIGGLE"] = Template(segments=("person_x",))
    ns = await _run(HOME_IMPORT, fake)
    assert ns["scene"]["segments"] == [{"uuid": "person_x", "type": "human"}]


async def test_character_example(fake: FakeViggle, workdir: Path) -> None:
    ns = await _run(CHARACTER, fake)
    assert not ns["result"].get("error_code")
    assert ns["result"]["status"] == "pending"
    assert fake.balance() == 10_000 - 1
