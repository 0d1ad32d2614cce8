"""Issue 12.5: typed front doors. The render inputs are spelled out once (``RenderInputs``)
and match ``prepare``; asset resources return their own model; ``help(ViggleClient)``
shows the resources; every public method says what it raises."""

from __future__ import annotations

import inspect
import pydoc
import typing

import pytest

from viggle_async import (
    Character,
    Characters,
    RenderInputs,
    Renders,
    Scene,
    Scenes,
    ViggleClient,
)


def test_render_inputs_match_prepare_exactly() -> None:
    params = inspect.signature(Renders.prepare).parameters
    assert set(RenderInputs.__annotations__) == {n for n in params if n != "self"}
    hints = typing.get_type_hints(Renders.prepare)
    typed = typing.get_type_hints(RenderInputs)
    assert all(typed[name] == hints[name] for name in typed)


@pytest.mark.parametrize(("resource", "model"), [(Characters, Character), (Scenes, Scene)])
def test_asset_resources_return_their_model(resource: type, model: type) -> None:
    for method in ("get", "wait", "create"):
        assert typing.get_type_hints(getattr(resource, method))["return"] is model
    assert "Page[" in str(typing.get_type_hints(resource.list)["return"])


def test_help_shows_the_resources() -> None:
    text = pydoc.render_doc(ViggleClient, renderer=pydoc.plaintext)
    for name in ("renders", "characters", "scenes", "get_credits"):
        assert f"|  {name}" in text or f"|  async {name}" in text


def test_supervisor_render_and_estimate_take_the_same_typed_inputs() -> None:
    # A typed caller gets the same checks on Supervisor.render/estimate as on renders.create.
    from viggle_async import Supervisor

    for method in (Supervisor.render, Supervisor.estimate, Renders.create):
        kwargs = inspect.signature(method).parameters["inputs"]
        assert kwargs.kind is inspect.Parameter.VAR_KEYWORD
        assert typing.get_type_hints(method)["inputs"] == typing.Unpack[RenderInputs]


def test_help_documents_the_supervisor_constructor() -> None:
    from viggle_async import Supervisor

    # Every constructor argument is explained in the text help() shows (not only named in
    # the signature): its meaning, units and default.
    doc = inspect.getdoc(Supervisor) or ""
    undocumented = [p for p in inspect.signature(Supervisor).parameters
                    if p != "client" and f"``{p}" not in doc]
    assert undocumented == []
    shown = pydoc.render_doc(Supervisor, renderer=pydoc.plaintext)
    assert all(f"``{p}" in shown for p in inspect.signature(Supervisor).parameters
               if p != "client")


@pytest.mark.parametrize("cls", [ViggleClient, Renders, Characters, Scenes])
def test_every_public_method_is_documented(cls: type) -> None:
    undocumented = [name for name, member in inspect.getmembers(cls)
                    if not name.startswith("_") and callable(member)
                    and not (member.__doc__ or "").strip()]
    assert undocumented == []


def test_get_credits_is_typed() -> None:
    from viggle_async import Credits

    assert typing.get_type_hints(ViggleClient.get_credits)["return"] is Credits


@pytest.mark.parametrize("model", list(__import__("viggle_async").Model))
async def test_every_model_enum_value_is_accepted_and_others_refused(model: str) -> None:
    from viggle_async import BackgroundMode, InvalidInputError

    async with ViggleClient("k", base_url="https://api.test") as client:
        for mode in BackgroundMode:
            prepared = await client.renders.prepare(
                ref_image_url="https://e.com/a.png", driving_video_url="https://e.com/b.mp4",
                model=model, background_mode=mode)
            assert ("model", model.value) in (prepared.request.fields or ())
        with pytest.raises(InvalidInputError) as info:
            await client.renders.prepare(ref_image_url="https://e.com/a.png",
                                         driving_video_url="https://e.com/b.mp4",
                                         model=model.value.lower())
        assert info.value.field == "model" and model.value in info.value.fix
