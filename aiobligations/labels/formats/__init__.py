"""Per-format implicit labels, written and read by byte-level container edits (never re-encoding).

Every format module offers the same three names:

- ``MEDIA_TYPES``: the media types it handles;
- ``sniff(data) -> bool``: whether ``data`` looks like this format;
- ``write_label(data, payload) -> bytes``: the file with exactly one GB 45438 label (replacing any);
- ``read_labels(data) -> list[str]``: every label payload found (more than one is non-conforming).

Malformed input raises :class:`aiobligations.errors.LabelError`.
"""

__all__: list[str] = []
