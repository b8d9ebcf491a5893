"""The ``[labels]`` section of ``aiobligations.toml``: which labels to apply, with which keys."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..profile import Profile

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .labeller import Labeller

__all__ = ["C2PA_ENV_CHAIN", "TEMPLATE", "LabelSettings", "build_labeller"]

C2PA_ENV_CHAIN = "AIOBLIGATIONS_C2PA_CHAIN"
"""When set (with ``AIOBLIGATIONS_C2PA_KEY``), the C2PA signer comes from the environment."""

TEMPLATE = """
[labels]
# Labels for synthetic content (Art. 38(2), 70(1); GB 45438-2025). Each can be turned off here,
# per route (middleware) or per call.
implicit = true                         # GB 45438 Annex E label in the file's metadata
explicit = true                         # a visible caption on images, an audible cue on WAV audio
explicit_wording = "AI生成"              # must name AI (人工智能/AI) and generation (生成/合成)
watermark = true                        # an invisible watermark in images, found even after metadata is stripped
c2pa = true                             # C2PA content credentials
# ContentPropagator on first write (Annex E note 1: the producer). A platform passing on
# others' content sets its own code here.
propagator = ""
# Development certificates written by `aiobligations init`; in production point these at
# certificates from a C2PA-trusted certification authority.
c2pa_chain = "keys/c2pa/chain.pem"
c2pa_key = "keys/c2pa/signer.key"
trust_anchors = "keys/c2pa/ca.pem"
"""
"""The commented section ``aiobligations init`` writes."""


@dataclass(frozen=True)
class LabelSettings:
    """Which labels are applied, and the C2PA credentials.

    .. versionadded:: 0.1.0
    """

    implicit: bool = True
    c2pa: bool = True
    explicit: bool = False
    watermark: bool = False
    explicit_wording: str = "AI生成"
    propagator: str = ""
    c2pa_chain: Path | None = None
    c2pa_key: Path | None = None
    trust_anchors: Path | None = None

    @classmethod
    def from_profile(cls, profile: Profile) -> LabelSettings:
        """Read and check ``[labels]``; without the section, implicit labels only.

        Raises:
            ConfigurationError: a value is invalid, or a C2PA file is missing while C2PA is on.
        """
        section: Any = profile.raw.get("labels")
        if section is None:
            return cls(c2pa=False)
        if not isinstance(section, dict):
            raise ConfigurationError("[labels] must be a table")
        base = profile.path.resolve().parent if profile.path else Path.cwd()
        problems = []

        def flag(name: str) -> bool:
            value = section.get(name, True)
            if not isinstance(value, bool):
                problems.append(f"[labels] {name} must be true or false, got {value!r}")
                return True
            return value

        def path(name: str) -> Path | None:
            value = section.get(name)
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                problems.append(f"[labels] {name} must be a path")
                return None
            resolved = Path(os.path.expanduser(value))
            return resolved if resolved.is_absolute() else base / resolved

        wording = section.get("explicit_wording", "AI生成")
        if not isinstance(wording, str):
            problems.append("[labels] explicit_wording must be a string")
            wording = "AI生成"
        else:
            from .explicit import validate_wording

            try:
                validate_wording(wording)
            except ConfigurationError as exc:
                problems.append(f"[labels] explicit_wording: {exc}")
        propagator = section.get("propagator", "")
        if not isinstance(propagator, str):
            problems.append("[labels] propagator must be a string")
            propagator = ""
        elif propagator:
            from .annex_e import check_charset

            try:
                check_charset(propagator)
            except ValueError as exc:
                problems.append(f"[labels] propagator: {exc}")
        settings = cls(
            propagator=propagator,
            implicit=flag("implicit"),
            c2pa=flag("c2pa"),
            explicit=flag("explicit") if "explicit" in section else False,
            watermark=flag("watermark") if "watermark" in section else False,
            explicit_wording=wording,
            c2pa_chain=path("c2pa_chain"),
            c2pa_key=path("c2pa_key"),
            trust_anchors=path("trust_anchors"),
        )
        # The signer may come from the environment instead (AIOBLIGATIONS_C2PA_CHAIN and _KEY).
        if settings.c2pa and not os.environ.get(C2PA_ENV_CHAIN):
            for name in ("c2pa_chain", "c2pa_key"):
                value = getattr(settings, name)
                if value is None:
                    problems.append(f"[labels] {name} is missing (or set c2pa = false)")
                elif not value.is_file():
                    problems.append(f"[labels] {name}: {value} does not exist (run `aiobligations init`)")
        if problems:
            raise ConfigurationError(f"{profile.path or 'profile'}: " + "; ".join(problems))
        return settings


def build_labeller(profile: Profile, settings: LabelSettings, key: Ed25519PrivateKey) -> Labeller:
    """The provider's :class:`~aiobligations.labels.labeller.Labeller`, as the profile describes it.

    It needs no ledger, so ``aiobligations inspect`` can run beside a service that holds it.

    Args:
        profile: The provider's profile (``ContentProducer`` is its provider code, else its name).
        settings: Its ``[labels]`` section.
        key: The Ed25519 key that signs ``ReservedCode1`` (the ledger's signing key).
    """
    from ..disclosure import ascii_safe
    from .labeller import Labeller

    signer = None
    if settings.c2pa:
        from .c2pa import C2PASigner  # The media extra.

        if os.environ.get(C2PA_ENV_CHAIN):
            signer = C2PASigner.from_env()
        elif settings.c2pa_chain is not None and settings.c2pa_key is not None:
            signer = C2PASigner.from_files(settings.c2pa_chain, settings.c2pa_key)
    anchors = settings.trust_anchors
    provider = profile.provider
    return Labeller(
        producer=provider.code or ascii_safe(provider.name).replace(" ", "%20"),
        propagator=settings.propagator or None,
        key=key,
        c2pa_signer=signer,
        trust_anchors=anchors.read_bytes() if anchors is not None and anchors.is_file() else None,
    )
