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


def load_plugins() -> dict[str, str]:
    """Register every installed ``cxrgan.generators`` and ``cxrgan.balancers`` entry point not registered yet.

    Returns the newly registered names, each with what it became ("generator", "generator and method", "method").
    """
    added: dict[str, str] = {}
    for point in entry_points(group=GENERATOR_GROUP):
        if (point.group, point.name) in _LOADED:
            continue
        if point.name in GENERATORS:
            _warn(point, f"a generator named {point.name!r} is already registered")
            continue
        try:
            cls = point.load()
        except Exception as exc:  # noqa: BLE001  (any error of a third-party import: warn, keep cxrgan working)
            _warn(point, f"{type(exc).__name__}: {exc}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
            _warn(point, f"{cls!r} is not a cxrgan.generators.GenerativeModel class")
            continue
        register_generator(point.name)(cls)
        _LOADED[(point.group, point.name)] = point.value
        added[point.name] = "generator"
        alpha = _oversampling_alpha(cls)
        if alpha is not None and point.name not in BALANCERS:
            register_balancer(point.name)(oversampler_factory(point.name, alpha, point.name))
            _GENERATOR_METHODS.add(point.name)
            added[point.name] = "generator and method"
    for point in entry_points(group=BALANCER_GROUP):
        if (point.group, point.name) in _LOADED:
            continue
        if point.name in BALANCERS:
            _warn(point, f"a method named {point.name!r} is already registered")
            continue
        try:
            factory = point.load()
        except Exception as exc:  # noqa: BLE001
            _warn(point, f"{type(exc).__name__}: {exc}")
            continue
        if not callable(factory):
            _warn(point, f"{factory!r} is not a factory(BalanceContext) -> Balancer")
            continue
        register_balancer(point.name)(factory)
        _LOADED[(point.group, point.name)] = point.value
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
