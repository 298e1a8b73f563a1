"""Generators and balancers of other packages, registered through entry points, with no change to cxrgan.

A package declares them in its ``pyproject.toml`` (see ``examples/cxrgan-vae-plugin``):

    [project.entry-points."cxrgan.generators"]
    vae = "cxrgan_vae.model:VAE"                    # a GenerativeModel class (fit / sample / state_dict)

    [project.entry-points."cxrgan.balancers"]
    vae-half = "cxrgan_vae.balancers:vae_half"      # factory(BalanceContext) -> Balancer

Once installed, ``load_plugins`` (the command line runs it first) registers each under its entry-point name: a
generator appears in ``cxrgan train-gan --method`` and its ``--help``; a balancer in every ``--methods``. A generator
of one class (``models_one_class``, as ``dcgan``) or of both classes of a binary task conditioned by an ``alpha``
config field (as ``cdcgan``) is also a method of the same name, the GAN oversampling of
:class:`cxrgan.balance.gan.GANOversampler`. A plugin that cannot be loaded, or whose name is taken, is left out
with a warning on stderr, so one broken package never stops cxrgan. ``cxrgan.testing.check_generator`` and
``check_balancer`` check a plugin's classes against the contracts the built-in ones pass.
"""

from __future__ import annotations

import dataclasses
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

from cxrgan.balance.base import BALANCERS, register_balancer
from cxrgan.balance.gan import oversampler_factory
from cxrgan.generators.base import GENERATORS, GenerativeModel, register_generator

GENERATOR_GROUP = "cxrgan.generators"
BALANCER_GROUP = "cxrgan.balancers"
_LOADED: dict[tuple[str, str], str] = {}  # (group, name) -> entry-point value, for every plugin registered
_GENERATOR_METHODS: set[str] = set()  # methods registered for plugin generators (GAN oversampling)


def _warn(point: EntryPoint, reason: str) -> None:
    print(f"cxrgan: warning: plugin {point.name!r} ({point.value}) of {point.group} not loaded: {reason}",
          file=sys.stderr)


def _oversampling_alpha(cls: type[GenerativeModel]) -> float | None:
    """The alpha of the GAN-oversampling method a generator class becomes (0 for one-class models); None if none."""
    if cls.data_target != "labels":
        return None
    if cls.models_one_class:
        return 0.0
    fields = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
    return float(fields["alpha"]) if "alpha" in fields else None


def _new_entry_points(group: str, registry: dict, accept: Callable[[Any], bool], wanted: str):
    """(entry point, loaded object) of every entry point of ``group`` not loaded yet whose name is free in
    ``registry`` and whose object ``accept``s; the others are warned about (``wanted`` says what was expected)."""
    for point in entry_points(group=group):
        if (point.group, point.name) in _LOADED:
            continue
        if point.name in registry:
            _warn(point, f"the name {point.name!r} is already registered")
            continue
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001  (any error of a third-party import: warn, keep cxrgan working)
            _warn(point, f"{type(exc).__name__}: {exc}")
            continue
        if not accept(loaded):
            _warn(point, f"{loaded!r} is not {wanted}")
            continue
        _LOADED[(point.group, point.name)] = point.value
        yield point, loaded


def load_plugins() -> dict[str, str]:
    """Register every installed ``cxrgan.generators`` and ``cxrgan.balancers`` entry point not registered yet.

    Returns the newly registered names, each with what it became ("generator", "generator and method", "method").
    """
    added: dict[str, str] = {}
    is_generator = lambda obj: isinstance(obj, type) and issubclass(obj, GenerativeModel)  # noqa: E731
    for point, cls in _new_entry_points(GENERATOR_GROUP, GENERATORS, is_generator, "a GenerativeModel class"):
        register_generator(point.name)(cls)
        added[point.name] = "generator"
        alpha = _oversampling_alpha(cls)
        if alpha is not None and point.name not in BALANCERS:
            register_balancer(point.name)(oversampler_factory(point.name, alpha, point.name))
            _GENERATOR_METHODS.add(point.name)
            added[point.name] = "generator and method"
    wanted = "a factory(BalanceContext) -> Balancer"
    for point, factory in _new_entry_points(BALANCER_GROUP, BALANCERS, callable, wanted):
        register_balancer(point.name)(factory)
        added[point.name] = "method"
    return added


def loaded_plugins() -> dict[tuple[str, str], str]:
    """(group, name) -> entry-point value of every plugin registered so far."""
    return dict(_LOADED)


def unload_plugins() -> None:
    """Remove every plugin ``load_plugins`` registered (and the methods its generators became) from the registries."""
    for (group, name) in list(_LOADED):
        (GENERATORS if group == GENERATOR_GROUP else BALANCERS).pop(name, None)
        del _LOADED[(group, name)]
    for name in _GENERATOR_METHODS:
        BALANCERS.pop(name, None)
    _GENERATOR_METHODS.clear()
