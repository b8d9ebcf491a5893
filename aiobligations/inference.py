"""``@obligations.inference``: the same disclosure and evidence for AI calls outside HTTP.

Batch jobs, queue consumers and gRPC handlers call models without passing through the ASGI
middleware. Decorating the function that calls the model opens an interaction around each call: its
id and the disclosure notice are available inside (:func:`current_interaction`), inputs and output are
captured into one ``interaction`` record, and output hooks (the labels feature) may transform the
output before it is returned.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from .interaction import interaction_scope, uuid7
from .records import InteractionRecord, interaction_record

if TYPE_CHECKING:  # pragma: no cover
    from .obligations import Obligations

__all__ = ["Interaction", "OutputHook", "current_interaction", "inference"]

F = TypeVar("F", bound=Callable[..., Any])

OutputHook = Callable[["Interaction", Any], Any]
"""Called with the interaction and each output (or each yielded item); returns it, changed or not."""

_current: ContextVar[Interaction | None] = ContextVar("aiobligations_interaction", default=None)


@dataclass
class Interaction:
    """One AI call in progress.

    Attributes:
        id: The interaction id (UUIDv7): what a person quotes to ask for an explanation.
        name: What was called (the function's qualified name by default).
        subject: Who the call is for, if known.
        notice: The disclosure to show the person: "you are interacting with AI" in plain words.
        started: Unix time at which the call began.
        fields: Extra facts to record (set them inside the call: model, usage…).
    """

    id: str
    name: str
    subject: str | None
    notice: str
    started: float = field(default_factory=time.time)
    fields: dict[str, Any] = field(default_factory=dict)


def current_interaction() -> Interaction | None:
    """The interaction the caller runs inside (within an ``@inference`` function), or ``None``."""
    return _current.get()


def _json_safe(value: Any, limit: int) -> Any:
    """A JSON-ready copy of ``value`` whose encoding stays under ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = json.dumps(repr(value), ensure_ascii=False)
    if len(text) > limit:
        return {"truncated": True, "head": text[:limit]}
    return json.loads(text)


@overload
def inference(
    obligations: Obligations,
    func: F,
    *,
    name: str | None = None,
    subject: str | Callable[..., str | None] | None = None,
    capture: bool = True,
    capture_limit: int = 1 << 20,
) -> F: ...


@overload
def inference(
    obligations: Obligations,
    func: None = None,
    *,
    name: str | None = None,
    subject: str | Callable[..., str | None] | None = None,
    capture: bool = True,
    capture_limit: int = 1 << 20,
) -> Callable[[F], F]: ...


def inference(
    obligations: Obligations,
    func: F | None = None,
    *,
    name: str | None = None,
    subject: str | Callable[..., str | None] | None = None,
    capture: bool = True,
    capture_limit: int = 1 << 20,
) -> F | Callable[[F], F]:
    """Decorate a function that calls a model; see :meth:`aiobligations.Obligations.inference`."""
    if func is None:
        return cast(Callable[[F], F], functools.partial(
            inference, obligations, name=name, subject=subject, capture=capture, capture_limit=capture_limit))
    target = func.func if isinstance(func, functools.partial) else func
    label = name or str(getattr(target, "__qualname__", repr(target)))
    signature = inspect.signature(target)

    def open_interaction(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Interaction:
        who: str | None
        if callable(subject):
            who = subject(*args, **kwargs)
        elif isinstance(subject, str):
            bound = signature.bind_partial(*args, **kwargs)
            value = bound.arguments.get(subject)
            who = str(value) if value is not None else None
        else:
            who = None
        return Interaction(str(uuid7()), label, who, obligations.notice)

    def close(interaction: Interaction, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
              outcome: str, error: str | None) -> None:
        personal = None
        if interaction.subject and capture:
            personal = {
                "input": _json_safe({"args": list(args), "kwargs": kwargs}, capture_limit),
                "output": _json_safe(output, capture_limit),
            }
        record = InteractionRecord(
            "inference", interaction.id, outcome, interaction.started, time.time() - interaction.started,
            interaction.subject or None, error,
            call=interaction.name, fields=dict(interaction.fields), personal=personal,
            capture_skipped=capture and not interaction.subject,
        )
        obligations.submit(interaction_record(*record))

    def hooked(interaction: Interaction, value: Any) -> Any:
        for hook in obligations.output_hooks:
            value = hook(interaction, value)
        return value

    class Call:
        """One call's interaction: current while the call runs, recorded when it ends."""

        def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, many: bool = False) -> None:
            self.args, self.kwargs = args, kwargs
            self.interaction = open_interaction(args, kwargs)
            self.many = many
            self.output: Any = [] if many else None

        def __enter__(self) -> Call:
            self._token = _current.set(self.interaction)
            self._scope = interaction_scope(self.interaction.id)
            self._scope.__enter__()
            return self

        def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
            self._scope.__exit__(kind, exc, tb)
            _current.reset(self._token)
            if kind is None:
                outcome, error = "completed", None
            elif issubclass(kind, GeneratorExit):
                outcome, error = "closed early", None
            else:
                outcome, error = "error", kind.__name__
            close(self.interaction, self.args, self.kwargs, self.output, outcome, error)

        def keep(self, value: Any) -> Any:
            """Pass one output (or one yielded item) through the hooks and keep it as evidence."""
            value = hooked(self.interaction, value)
            if self.many:
                self.output.append(value)
            else:
                self.output = value
            return value

    if inspect.isasyncgenfunction(target):

        @functools.wraps(target)
        async def async_gen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            with Call(args, kwargs, many=True) as call:
                async for item in func(*args, **kwargs):
                    yield call.keep(item)

        return cast(F, async_gen_wrapper)

    if inspect.isgeneratorfunction(target):

        @functools.wraps(target)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with Call(args, kwargs, many=True) as call:
                for item in func(*args, **kwargs):
                    yield call.keep(item)

        return cast(F, gen_wrapper)

    if inspect.iscoroutinefunction(target):

        @functools.wraps(target)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            # A plain `with` around an un-awaited coroutine would close before it runs, so async
            # functions get their own wrapper, with the `with` inside.
            with Call(args, kwargs) as call:
                return call.keep(await func(*args, **kwargs))

        return cast(F, async_wrapper)

    @functools.wraps(target)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        with Call(args, kwargs) as call:
            return call.keep(func(*args, **kwargs))

    return cast(F, sync_wrapper)
