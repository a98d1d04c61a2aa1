"""Label lists as the release stores them in its CSV and npz files (``"[happy, 'sad']"``)."""

from __future__ import annotations

import math

_SPLIT_CHARS = ("'", '"', ",")


def string_to_list(value: object) -> list[str]:
    """Parse a label list the way the release's ``string_to_list`` does (MODEL_SPEC §3.1, §8).

    - a list (or tuple / NumPy array) passes through as a list, unchanged;
    - ``""``, None or NaN -> ``[]``;
    - otherwise drop one leading ``[`` and one trailing ``]``, split on every ``'``, ``"`` and ``,``, strip
      each piece and drop the empty ones. No lower-casing and no de-duplication: ``"[Happy, sad]"`` ->
      ``["Happy", "sad"]``.
    """
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()  # a NumPy scalar (np.str_ is a str already) or array
        if isinstance(value, list):
            return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    text = str(value)
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    for ch in _SPLIT_CHARS[1:]:
        text = text.replace(ch, _SPLIT_CHARS[0])
    return [piece.strip() for piece in text.split(_SPLIT_CHARS[0]) if piece.strip()]
