"""Wording shared by messages and reports."""


def count(n: int, word: str, plural: str | None = None) -> str:
    """``"1 frame"``, ``"2 frames"``; ``plural`` for irregular words (``count(2, "echo", "echoes")``)."""
    return f"{n} {word if n == 1 else (plural or word + 's')}"
