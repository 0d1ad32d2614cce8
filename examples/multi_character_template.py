"""Render a multi-person template with two of your own characters (character_mapping).

Import the template as a scene, create two characters, then map each tracked person
(segment) of the template to a character. Runs against the embedded fake server by default:

    python examples/multi_character_template.py
    python examples/multi_character_template.py --real TEMPLATE_ID ALICE.png BOB.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from viggle_async import ViggleClient
from viggle_async.testing import FakeViggle, make_png


@contextlib.asynccontextmanager
async def api(real: bool) -> AsyncIterator[ViggleClient]:
    if real:
        async with ViggleClient() as client:  # VIGGLE_API_KEY, VIGGLE_BASE_URL
            yield client
        return
    async with FakeViggle(time_scale=50.0) as fake, ViggleClient(
        fake.api_key, base_url=fake.base_url
    ) as client:
        yield client


async def render(args: argparse.Namespace, out: Path) -> None:
    images: list[Path | bytes] = ([Path(p) for p in args.images] if args.images
                                  else [make_png(64, 64, (200, 80, 40)),
                                        make_png(64, 64, (40, 80, 200))])
    poll = 5.0 if args.real else 0.1
    async with api(args.real) as client:
        # The segments come only with the import answer (a later get does not list them).
        imported = await client.scenes.import_template(args.template, name="Group dance")
        people = [segment.uuid for segment in imported.segments]
        print(f"template {args.template}: scene {imported.id}, people {people}")
        created = await asyncio.gather(*(
            client.characters.create(name=f"person {i}", image=image)
            for i, image in enumerate(images)))
        # A render needs the scene and every character ready (docs/api/renders.md#create-render).
        scene = await client.scenes.wait(imported.id, poll_interval=poll)
        characters = await asyncio.gather(*(
            client.characters.wait(c.id, poll_interval=poll) for c in created))
        # People left out of the mapping keep their own look; a character may be reused.
        mapping = {uuid: c.id for uuid, c in zip(people, characters, strict=False)}
        print(f"character_mapping {mapping}")
        job = await client.renders.create(scene_id=scene.id, character_mapping=mapping)
        final = await client.renders.wait(job.job_id, poll_interval=3.0 if args.real else 0.2)
        assert final.cdn_url is not None  # a complete status always has it
        dest = await client.download(final.cdn_url, out / f"{job.job_id}.mp4")
        print(f"{final.status}: saved {dest} ({dest.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="use the real API")
    parser.add_argument("template", nargs="?", default="tmpl-duo-dance",
                        help="multi-person template id (from viggle.ai)")
    parser.add_argument("images", nargs="*", help="one character image per person")
    parser.add_argument("--out", default="viggle-demo", help="output folder")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(render(args, out))


if __name__ == "__main__":
    main()
