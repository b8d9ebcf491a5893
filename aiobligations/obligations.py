"""``Obligations``: the hub that wires the provider's profile to the ledger and, later, the rest."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import structlog

from .disclosure import DisclosureSettings, short_notice
from .errors import ConfigurationError, LedgerError
from .inference import F, OutputHook, inference
from .interaction import uuid7
from .keys import load_signer
from .labels.labeller import Labelled, Labeller
from .labels.settings import LabelSettings, build_labeller
from .ledger.crypto import MasterKey
from .ledger.ledger import Ledger
from .ledger.otlp import LedgerExporter, OTLPSettings
from .ledger.process import ProcessLedger
from .ledger.spool import Spool
from .ledger.note import Signer
from .ledger.store import SQLiteStore
from .profile import Profile, load_profile

if TYPE_CHECKING:
    from datetime import date

    from .controls import ControlState
    from .controls.filing import FilingStatus
    from .controls.termination import TerminationState
    from .requests.workflow import Explainer, RequestDesk

__all__ = ["Obligations"]

_Keys = Callable[[str], "Signer | MasterKey | str | bytes | None"]
_ExplainerT = TypeVar("_ExplainerT", bound="Explainer")

log = structlog.get_logger("aiobligations.labels")


def _skip_cause(reason: str) -> str:
    """Name why a label was skipped, from the labeller's ``skipped`` message."""
    lowered = reason.lower()
    if "cjk font" in lowered or "cannot load the font" in lowered or "aiobligations_cjk_font" in lowered:
        return "no_cjk_font"
    if "too small" in lowered:
        return "image_too_small"
    if "pip install" in lowered:
        return "missing_dependency"
    return "unsupported_variant"


class Obligations:
    """A provider's obligations, as code: its profile and its evidence ledger.

    Use it as a context manager so that leaving flushes and closes the ledger:

    Example:
        >>> with Obligations.from_file("aiobligations.toml") as obligations:  # doctest: +SKIP
        ...     obligations.ledger.append({"kind": "risk", "summary": "prompt injection seen"})

    Args:
        profile: The provider's validated profile.
        ledger: A ledger to use instead of the one the profile describes (tests, custom stores).
        keys: A callback that supplies the keys, from a KMS or a secret store, so that none is on
            disk: asked ``keys("signing_key")`` and ``keys("master_key")``, it returns a
            :class:`~aiobligations.ledger.Signer` / :class:`~aiobligations.ledger.MasterKey`, the
            key file's text (PEM, or the master key line), 32 raw bytes for the master key, or
            ``None`` to use the profile's key.

    .. versionadded:: 0.1.0
    """

    def __init__(self, profile: Profile, *, ledger: Ledger | None = None, keys: _Keys | None = None) -> None:
        self.profile = profile
        self._keys = keys
        # Validate every section before opening anything, so a bad profile fails at start-up.
        self.disclosure = DisclosureSettings.from_profile(profile)
        self.label_settings = LabelSettings.from_profile(profile)
        from .requests.calendar import calendar_from_profile

        self.calendar = calendar_from_profile(profile)
        """Mainland China's working days, with the holiday files of ``[requests] calendar``."""
        otlp = OTLPSettings.from_profile(profile)
        self.ledger = ledger if ledger is not None else self._open_ledger(profile, keys)
        self.spool = Spool(f"{profile.ledger.path}.spool", self.ledger)
        self.otlp: LedgerExporter | None = (
            otlp.exporter(self.ledger, service_name=profile.service.name or None).start() if otlp else None)
        """The exporter of ledger records to OpenTelemetry that the profile's ``[otlp]`` table asks for."""
        self.output_hooks: list[OutputHook] = []
        """Functions that may transform each AI output (the labels feature plugs in here)."""
        self._labeller: Labeller | None = None
        # (label, cause) pairs already warned about: one warning each, never one per request.
        self._skips_warned: set[tuple[str, str]] = set()
        self._skips_lock = threading.Lock()
        self._requests: RequestDesk | None = None
        self._requests_lock = threading.Lock()
        self._controls: ControlState | None = None
        self._controls_lock = threading.Lock()
        self._termination: TerminationState | None = None
        self.explainer_function: Explainer | None = None
        """The function registered with :meth:`explainer`, if any."""

    @property
    def requests(self) -> RequestDesk:
        """The :class:`aiobligations.requests.RequestDesk`: explanation requests and complaints.

        Built on first use from the ledger's ``explanation`` and ``complaint`` records.
        """
        if self._requests is None:
            from .requests import RequestDesk

            # Several threads may ask first (request handlers, the reminder): build one desk only.
            with self._requests_lock:
                if self._requests is None:
                    section = self.profile.raw.get("requests", {})
                    days = section.get("deadline_days", 15) if isinstance(section, dict) else 15
                    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
                        raise ConfigurationError(
                            f"[requests] deadline_days must be a whole number of working days from 1 to 365, got {days!r}"
                        )
                    self._requests = RequestDesk(self, deadline_days=days, calendar=self.calendar)
        return self._requests

    @property
    def controls(self) -> ControlState:
        """The :class:`aiobligations.controls.ControlState`: security incidents and the takeover switch.

        Built on first use from the ledger's ``incident`` and ``control`` records (threads asking
        at once build one).

        .. versionadded:: 0.2.0
        """
        if self._controls is None:
            from .controls import ControlState

            with self._controls_lock:
                if self._controls is None:
                    self._controls = ControlState(self)
        return self._controls

    @property
    def termination(self) -> TerminationState:
        """The :class:`aiobligations.controls.termination.TerminationState`: the service's termination plan (Art. 50).

        Built on first use from the ledger's ``control`` records (threads asking at once build one).

        .. versionadded:: 0.2.0
        """
        if self._termination is None:
            from .controls.termination import TerminationState

            with self._controls_lock:
                if self._termination is None:
                    self._termination = TerminationState(self)
        return self._termination

    def filing_status(self, registered_users: int, *, crossed_on: date | None = None,
                      today: date | None = None) -> FilingStatus:
        """Whether Art. 47 asks for a filing at this many registered users, with whom, by when, and what is missing.

        :func:`aiobligations.controls.filing.filing_status` with this hub's profile and calendar.

        Example:
            >>> obligations.filing_status(20_000, crossed_on=date(2026, 9, 1)).due_by  # doctest: +SKIP
            datetime.date(2026, 9, 15)

        Raises:
            InvalidControl: ``registered_users`` is not a whole number of 0 or more, or a day is not a date.

        .. versionadded:: 0.2.0
        """
        from .controls.filing import filing_status

        return filing_status(self.profile, registered_users, crossed_on=crossed_on, today=today,
                             calendar=self.calendar)

    def erase_subject(self, subject: str) -> int:
        """Crypto-shred a person everywhere this hub keeps them (Art. 49(2) with PIPL's erasure).

        The ledger deletes the person's key (every sealed record of theirs becomes unreadable, every
        proof still verifies) and, when the request desk is in use, it drops their texts from memory.
        Prefer this to ``ledger.erase_subject`` in a running service.

        Returns:
            The index of the ledger's ``subject.erased`` record.
        """
        if self._requests is not None:
            return self._requests.erase_subject(subject)
        return self.ledger.erase_subject(subject)

    def explainer(self, function: _ExplainerT) -> _ExplainerT:
        """Register the function that explains an interaction (Art. 39); use it as a decorator.

        It receives the interaction record, opened from the ledger with its personal part, and
        returns an :class:`aiobligations.requests.Explanation`, or ``None`` to leave the request to
        a person.

        Example:
            >>> @obligations.explainer  # doctest: +SKIP
            ... def explain(record): return Explanation("…", {"model": record["model"]})
        """
        self.explainer_function = function
        if self._requests is not None:
            self._requests.register_explainer(function)
        return function

    @property
    def labeller(self) -> Labeller:
        """The provider's :class:`aiobligations.labels.labeller.Labeller`, built on first use."""
        if self._labeller is None:
            self._labeller = build_labeller(self.profile, self.label_settings, self.ledger.signer.private_key)
        return self._labeller

    def label_with_evidence(self, data: bytes, media_type: str | None = None, *, interaction_id: str | None = None,
                            implicit: bool | None = None, c2pa: bool | None = None, explicit: bool | None = None,
                            watermark: bool | None = None, composite: bool = False) -> Labelled:
        """Label a generated file as the profile says (GB 45438 implicit label, C2PA) and record it.

        Each label applied leaves a ``label`` record in the ledger: the interaction, the format, the
        label's fields and the content's SHA-256 before and after.

        Args:
            data: The file's bytes.
            media_type: Its declared media type (checked against the content).
            interaction_id: The interaction that produced it; its ``ProduceID``. A new id otherwise.
            implicit: Override the profile's ``[labels] implicit``.
            c2pa: Override the profile's ``[labels] c2pa``.
            explicit: Override ``[labels] explicit`` (a caption on images, a cue on WAV audio).
            watermark: Override ``[labels] watermark`` (an invisible mark in images).
            composite: The content edits real material with AI (C2PA digital source type
                ``compositeWithTrainedAlgorithmicMedia`` instead of ``trainedAlgorithmicMedia``).

        Returns:
            The labelled file and the evidence recorded, which says why a part was skipped (e.g.
            ``evidence["explicit"] == {"skipped": "no audio cue: ..."}`` for an A-law WAV). The
            first time a label is skipped for a cause (``no_cjk_font``, ``image_too_small``,
            ``missing_dependency``, ``unsupported_variant``), the hub logs one ``label_skipped``
            warning naming the label, the cause and the reason; later skips for the same cause
            are only in their ``label`` records.

        Raises:
            LabelError: the file is malformed or of an unsupported format; nothing is recorded.
        """
        settings = self.label_settings
        produce_id = interaction_id or str(uuid7())
        labelled = self.labeller.label(
            data,
            media_type,
            produce_id=produce_id,
            implicit=settings.implicit if implicit is None else implicit,
            c2pa=settings.c2pa if c2pa is None else c2pa,
            explicit=settings.explicit if explicit is None else explicit,
            watermark=settings.watermark if watermark is None else watermark,
            wording=settings.explicit_wording,
            composite=composite,
        )
        self.submit({"kind": "label", "interaction_id": produce_id, **labelled.evidence})
        self._warn_skipped(labelled.evidence)
        return labelled

    def _warn_skipped(self, evidence: dict[str, Any]) -> None:
        """Log one ``label_skipped`` warning per label and cause, the first time it happens."""
        for part in ("explicit", "watermark"):
            entry = evidence.get(part)
            if not isinstance(entry, dict) or not isinstance(entry.get("skipped"), str) or entry.get("not_applicable"):
                continue  # A part the format never carries (a watermark in audio) is no cause for a warning.
            reason = entry["skipped"]
            key = (part, _skip_cause(reason))
            with self._skips_lock:
                if key in self._skips_warned:
                    continue
                self._skips_warned.add(key)
            log.warning("label_skipped", label=part, cause=key[1], reason=reason, format=evidence.get("format"),
                        note="logged once per cause; each skip is in its label record")

    def label(self, data: bytes, media_type: str | None = None, *, interaction_id: str | None = None,
              implicit: bool | None = None, c2pa: bool | None = None, explicit: bool | None = None,
              watermark: bool | None = None, composite: bool = False) -> bytes:
        """Label a generated file as the profile says and record it; return the labelled file.

        :meth:`label_with_evidence`, returning only the bytes. Same arguments and errors.
        """
        return self.label_with_evidence(data, media_type, interaction_id=interaction_id, implicit=implicit,
                                        c2pa=c2pa, explicit=explicit, watermark=watermark,
                                        composite=composite).data

    @property
    def notice(self) -> str:
        """The short disclosure notice, in the profile's default language."""
        return short_notice(self.disclosure, self.disclosure.language)

    def submit(self, record: dict[str, Any]) -> None:
        """Hand a record to the ledger without waiting; if it cannot take it, spool it.

        Never a silent loss: a spooled record is sealed on disk and replayed once the ledger
        accepts again. This is the request path's way to keep evidence (the ``fail_open`` policy).
        """
        try:
            self.ledger.submit(record)
        except LedgerError as exc:
            self.spool.put(record, reason=type(exc).__name__)
            return
        if self.spool.pending:
            self.spool.replay_soon()

    def submit_deferred(self, factory: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
        """Like :meth:`submit`, for a record the ledger builds as ``factory(*args)``.

        See :meth:`aiobligations.ledger.Ledger.submit_deferred`. If the ledger cannot take it, the
        record is built here and spooled: never a silent loss.
        """
        try:
            self.ledger.submit_deferred(factory, args)
        except LedgerError as exc:
            self.spool.put(factory(*args), reason=type(exc).__name__)
            return
        if self.spool.pending:
            self.spool.replay_soon()

    @overload
    def inference(self, func: F, *, name: str | None = None,
                  subject: str | Callable[..., str | None] | None = None, capture: bool = True,
                  capture_limit: int = 1 << 20) -> F: ...

    @overload
    def inference(self, func: None = None, *, name: str | None = None,
                  subject: str | Callable[..., str | None] | None = None, capture: bool = True,
                  capture_limit: int = 1 << 20) -> Callable[[F], F]: ...

    def inference(self, func: F | None = None, *, name: str | None = None,
                  subject: str | Callable[..., str | None] | None = None, capture: bool = True,
                  capture_limit: int = 1 << 20) -> F | Callable[[F], F]:
        """Decorate a function that calls a model (sync, async, generator or async generator).

        Each call becomes an interaction: :func:`aiobligations.inference.current_interaction` gives
        its id and notice inside the call, inputs and output are captured into an ``interaction``
        record (sealed when a subject is known), and :attr:`output_hooks` may transform the output.

        Example:
            >>> @obligations.inference(subject="user_id")  # doctest: +SKIP
            ... def summarise(text: str, user_id: str) -> str: ...

        Args:
            func: The function (when used without parentheses).
            name: What the record calls it (default: its qualified name).
            subject: The name of the argument holding the person's id, or a function of the
                call's arguments that returns it.
            capture: Keep inputs and output (sealed under the subject's key).
            capture_limit: The most characters of each kept.
        """
        if func is None:
            return inference(self, name=name, subject=subject, capture=capture, capture_limit=capture_limit)
        return inference(self, func, name=name, subject=subject, capture=capture, capture_limit=capture_limit)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] = "aiobligations.toml", *, ledger: Ledger | None = None,
                  keys: _Keys | None = None) -> Obligations:
        """Load ``aiobligations.toml`` and open the ledger it names.

        Args:
            path: The profile.
            ledger: As for the constructor.
            keys: As for the constructor.

        Raises:
            ConfigurationError: the file or a key is missing or invalid; the message says which.
        """
        return cls(load_profile(path), ledger=ledger, keys=keys)

    @staticmethod
    def _open_ledger(profile: Profile, keys: _Keys | None = None) -> Ledger:
        settings = profile.ledger
        signer: Signer | None = None
        master: MasterKey | None = None
        if keys is not None:
            # A KMS callback: asked for "signing_key" and "master_key", it returns the key (a Signer
            # or MasterKey, or the key file's text), or None to use the profile's.
            signer = _signer_from(keys("signing_key"), settings.origin)
            master = _master_key_from(keys("master_key"))
        signer = signer or load_signer(settings.signing_key, settings.origin)
        master = master or MasterKey.load(settings.master_key)
        folder = Path(settings.path).parent
        if not folder.is_dir():
            raise ConfigurationError(f"the ledger's folder {folder} does not exist")
        options: dict[str, Any] = {
            "origin": settings.origin,
            "signer": signer,
            "master_key": master,
            "queue_size": settings.queue_size,
            "on_full": settings.on_full,
            "max_batch": settings.max_batch,
            "checkpoint_interval": settings.checkpoint_interval,
            "retention": settings.retention,
        }
        raw_witnesses = profile.raw.get("witnesses")
        if raw_witnesses is not None:
            from .witness.client import WitnessSettings

            # Whichever process signs the checkpoints asks them: this one, the writer process or
            # the replicas' elected sequencer.
            options["witnesses"] = WitnessSettings.from_dict(raw_witnesses)
        raw_timestamps = profile.raw.get("timestamps")
        if raw_timestamps is not None:
            from .witness.timestamp import TimestampSettings

            options["timestamps"] = TimestampSettings.from_dict(raw_timestamps)
        if settings.url is not None:
            from .ledger.replica import ReplicaLedger

            return ReplicaLedger(settings.url, schema=settings.schema, candidate=settings.sequencer,
                                 migrate=settings.migrate, leftovers=f"{settings.path}.leftovers", **options)
        if settings.writer == "process":
            return ProcessLedger(settings.path, **options)
        return Ledger(SQLiteStore(settings.path), **options)

    def close(self) -> None:
        """Write out the spool, stop the OTLP exporter, then flush and close the ledger. Idempotent."""
        if getattr(self, "_controls", None) is not None:
            self._controls.close()  # type: ignore[union-attr]
        if getattr(self, "_termination", None) is not None:
            self._termination.close()  # type: ignore[union-attr]
        self.spool.close()
        otlp = getattr(self, "otlp", None)
        if otlp is not None:
            otlp.close()
        self.ledger.close()

    def __enter__(self) -> Obligations:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Obligations(provider={self.profile.provider.name!r}, ledger={self.ledger!r})"


def _master_key_from(value: object) -> MasterKey | None:
    """The master key given by a ``keys`` callback (``None``: use the profile's)."""
    if value is None:
        return None
    if isinstance(value, MasterKey):
        return value
    if isinstance(value, bytes) and len(value) == 32:
        return MasterKey(value)
    if isinstance(value, str):
        return MasterKey.from_text(value, "the master key from the keys callback")
    raise ConfigurationError(f"the keys callback returned a {type(value).__name__} for master_key")


def _signer_from(value: object, origin: str) -> Signer | None:
    """The signing key given by a ``keys`` callback (``None``: use the profile's)."""
    if value is None:
        return None
    from .keys import _signer_from_pem

    if isinstance(value, Signer):
        return value
    if isinstance(value, (str, bytes)):
        data = value.encode() if isinstance(value, str) else value
        return _signer_from_pem(data, "from the keys callback", origin)
    raise ConfigurationError(f"the keys callback returned a {type(value).__name__} for signing_key")
