"""Find a font that can draw Chinese, for explicit image labels (GB 45438 §5.2).

Search order, first hit wins:

1. the file named by the ``AIOBLIGATIONS_CJK_FONT`` environment variable (it must exist);
2. Noto Sans CJK from the ``manimgx-fonts-cjk`` package (``pip install 'aiobligations[cjk-font]'``, which the
   ``dev`` extra and ``scripts/demo`` install);
3. system fonts: WenQuanYi Micro Hei (Debian ``fonts-wqy-microhei``, which
   ``scripts/install-chromium`` installs), WenQuanYi Zen Hei, Noto Sans CJK / Source Han Sans
   (Debian ``fonts-noto-cjk``) and Droid Sans Fallback.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from ..errors import LabelError

__all__ = ["CJK_FONT_ENV", "SYSTEM_CJK_FONTS", "cjk_font", "find_cjk_font"]

CJK_FONT_ENV = "AIOBLIGATIONS_CJK_FONT"
"""The environment variable that names a CJK-capable TTF, OTF or TTC file to use."""

_PACKAGE = "manimgx_fonts_cjk"
_PACKAGE_FILE = "NotoSansCJK-VF.otf.ttc"

SYSTEM_CJK_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/adobe-source-han-sans/SourceHanSans-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
"""System font files tried, in order, when neither the variable nor the package gives one."""

_INSTALL_HINT = (
    "install the font package with pip install 'aiobligations[cjk-font]' (manimgx-fonts-cjk), "
    "or Debian's fonts-wqy-microhei, or set AIOBLIGATIONS_CJK_FONT to a CJK TTF/OTF/TTC file"
)


def _packaged_font() -> Path | None:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _PACKAGE_FILE
        if candidate.is_file():
            return candidate
    return None


def find_cjk_font() -> Path:
    """Return the path of a font file that can draw simplified Chinese.

    See the module docstring for the search order. Nothing is cached, so installing a font or
    setting the variable takes effect at the next call.

    Raises:
        LabelError: ``AIOBLIGATIONS_CJK_FONT`` names a missing file, or no CJK font was found;
            the message says what to install.
    """
    named = os.environ.get(CJK_FONT_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise LabelError(f"{CJK_FONT_ENV} names {named!r}, which is not a file")
        return path
    packaged = _packaged_font()
    if packaged is not None:
        return packaged
    for name in SYSTEM_CJK_FONTS:
        path = Path(name)
        if path.is_file():
            return path
    raise LabelError(f"no CJK font found: {_INSTALL_HINT}")


@lru_cache(maxsize=64)
def _load(path: str, mtime: float, size: int, weight: str):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    # A TrueType collection holds one face per region; prefer the simplified-Chinese face.
    faces = []
    index = 0
    while True:
        try:
            faces.append(ImageFont.truetype(path, size, index=index))
        except OSError:
            break
        index += 1
        if not path.lower().endswith((".ttc", ".otc")):
            break
    if not faces:
        raise LabelError(f"cannot load the font {path!r}")
    font = next((face for face in faces if " SC" in (face.getname()[0] or "")), faces[0])
    # Variable fonts (the packaged Noto Sans CJK) default to their thinnest instance.
    try:
        names = [n.decode() if isinstance(n, bytes) else n for n in font.get_variation_names()]
    except OSError:
        names = []
    if weight in names:
        font.set_variation_by_name(weight)
    return font


def cjk_font(size: int, *, weight: str = "Bold"):  # type: ignore[no-untyped-def]
    """Return a Pillow ``FreeTypeFont`` from :func:`find_cjk_font` at ``size`` pixels.

    In a collection the simplified-Chinese face is chosen; a variable font is set to the named
    ``weight`` instance when it has one (static fonts ignore it).

    Raises:
        LabelError: no CJK font was found, or it cannot be loaded.
    """
    path = find_cjk_font()
    return _load(str(path), path.stat().st_mtime, int(size), weight)
