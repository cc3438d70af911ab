"""The one rule that names an entry's state, whatever source it came from.

/proc prints a state word for TCP, SCTP and DCCP only; for every other protocol the flags say
what happened: ``[UNREPLIED]`` (no answer seen), ``[ASSURED]`` (or ``[OFFLOAD]``: traffic both
ways, kept under pressure), else a reply was seen but the entry is not assured yet. ctnetlink
carries the same facts as a state number and status bits. Both sources, and every view of the
talkers, label entries through this function, so the labels cannot drift apart.
"""

from typing import Optional


def state_label(state: Optional[str], unreplied: bool, assured: bool) -> str:
    if state:
        return state
    if unreplied:
        return "UNREPLIED"
    return "ASSURED" if assured else "REPLIED"
