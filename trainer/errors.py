"""Errors a user can act on, shared by the config reader and the optimiser builder, and the
did-you-mean their messages offer.

Pure: no imports from the rest of ``trainer``, so every module can raise these.

Example:
    >>> suggest("histroy_freq", ["history_freq", "n_steps"])
    'history_freq'
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A config file (or an override) that cannot be used; the message says what to change."""


class ConfigWarning(UserWarning):
    """Something in a config file that is accepted but probably not what was meant."""


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite (the run ends in state ``diverged``)."""


def levenshtein(s1: str, s2: str) -> int:
    """Edit distance between two strings (insertions, deletions, substitutions cost 1).

    Example:
        >>> levenshtein("kitten", "sitting")
        3
    """
    if len(s1) < len(s2):
        s1, s2 = s2, s1
    # one row of the DP table at a time: row[j] = distance(s1[:i], s2[:j])
    row = list(range(len(s2) + 1))
    for i, c1 in enumerate(s1, start=1):
        prev_diag, row[0] = row[0], i
        for j, c2 in enumerate(s2, start=1):
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + (c1 != c2))
    return row[-1]


def typo_limit(name: str, min_len: int = 4) -> int | None:
    """Largest edit distance at which ``name`` still counts as a typo of a known name.

    Names shorter than ``min_len`` are never typos (a helper variable ``lr`` is not a typo of
    ``wd``); up to 5 characters one edit is allowed, from 6 characters two.
    """
    if len(name) < min_len:
        return None
    return 1 if len(name) < 6 else 2


def suggest(name: str, candidates: Iterable[str], min_len: int = 4) -> str | None:
    """The candidate closest to ``name`` if it is close enough to be a typo, else ``None``.

    A typo is within ``typo_limit(name)`` edits and starts with the same letter. Case is
    ignored; ties go to the earlier candidate.

    Example:
        >>> suggest("my_helper", ["history_freq"]) is None
        True
    """
    limit = typo_limit(name, min_len)
    if limit is None:
        return None
    best, best_d = None, limit + 1
    for cand in candidates:
        # typos rarely hit the first letter, while helper names often differ only there
        # ('patch_size' is a helper variable, not a misspelt 'batch_size')
        if cand[:1].lower() != name[:1].lower():
            continue
        d = levenshtein(name.lower(), cand.lower())
        if d < best_d:
            best, best_d = cand, d
    return best
