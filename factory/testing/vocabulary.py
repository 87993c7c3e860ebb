"""Deterministic filler text for the fake LLM server: a fixed vocabulary, word runs of a bounded
length, short sentences and values of the common JSON-Schema string formats.

Everything is drawn from a caller-supplied ``random.Random``, so the same seed gives the same text.
"""

from __future__ import annotations

import random
from collections.abc import Callable

WORDS = (
    "able about account across action active actual add advice after again agent agree ahead "
    "allow almost alone along already also always amount analysis answer anyone apply approach "
    "area argue around article ask assume attention audience author available avoid balance base "
    "basic become before begin behind believe benefit better between beyond billing bring budget "
    "build business call camera capital card care carry case cause center certain chance change "
    "charge check choice claim class clear client close code collect color common company compare "
    "concern condition consider contact contain context control cost country course cover create "
    "credit current customer data deal decide deliver demand describe design detail develop "
    "device direct discuss doctor early easy effect effort either energy enough ensure entire "
    "event evidence exact example expect expert explain fact factor family feature field figure "
    "final finance find focus follow force forward friend full future garden general goal good "
    "group growth guard guide happy health help history hold home hope hotel idea image impact "
    "improve include increase indeed issue item join judge keep kind know language large later "
    "learn leave level light likely limit list little local manage market matter measure medical "
    "meeting member memory method middle minute model moment money month morning move music "
    "nature near need network never next note number offer office often open option order other "
    "owner page paper party pass patient pay people period person phone picture place plan "
    "player point policy positive power prepare present price private problem process produce "
    "product program project provide public purpose quality question quick quite range rather "
    "reach ready reason receive record reduce refund region remain report request require "
    "research resource respond result return review right risk room rule safe save scene school "
    "science season second secure sense series service session share short should simple single "
    "skill small social source space speak special staff stage standard start state step still "
    "store story strong student study style subject success summer support sure system table "
    "task teacher team term test thank theory thing third threat ticket today together topic "
    "total toward travel treat trial true trust turn type under unit until update user usual "
    "value various verify view visit voice wait water weather week welcome while window within "
    "without word work world write year young"
).split()
NWORDS = len(WORDS)


def words(rng: random.Random, lo: int, hi: int | None) -> str:
    """A run of vocabulary words whose length lies within [lo, hi] characters."""
    if hi is not None and hi <= 0:
        return ""
    top = hi if hi is not None else max(lo, 48)
    bottom = max(lo, min(12, top))
    target = rng.randint(bottom, max(bottom, min(top, 48)))
    parts: list[str] = []
    n = -1
    while n < target:
        w = WORDS[int(rng.random() * NWORDS)]
        parts.append(w)
        n += len(w) + 1
    s = " ".join(parts)
    if hi is not None and len(s) > hi:
        shorter = " ".join(parts[:-1])
        if len(parts) > 1 and len(shorter) >= lo:
            s = shorter
        else:
            s = s[:hi].rstrip() or s[:hi]
    while len(s) < lo:
        w = WORDS[int(rng.random() * NWORDS)]
        s = s + " " + w if s else w
    if hi is not None and len(s) > hi:
        s = s[:hi]
    if len(s) < lo or (s and s[-1] == " "):
        s = (s.rstrip() + "x" * lo)[: max(lo, len(s.rstrip()))]
    return s


def sentence(rng: random.Random) -> str:
    """A short deterministic English-looking sentence."""
    n = rng.randint(6, 12)
    ws = [WORDS[int(rng.random() * NWORDS)] for _ in range(n)]
    return "This is a fake reply: " + " ".join(ws) + "."


FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda r: (
        f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
        f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
    ),
    "date": lambda r: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
    "email": lambda r: f"{WORDS[r.randrange(NWORDS)]}.{WORDS[r.randrange(NWORDS)]}@example.com",
    "uri": lambda r: f"https://example.com/{WORDS[r.randrange(NWORDS)]}",
    "url": lambda r: f"https://example.com/{WORDS[r.randrange(NWORDS)]}",
    "hostname": lambda r: f"{WORDS[r.randrange(NWORDS)]}.example.com",
    "ipv4": lambda r: f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
    "uuid": lambda r: (
        f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-"
        f"{0x8000 | r.getrandbits(14):04x}-{r.getrandbits(48):012x}"
    ),
    "duration": lambda r: f"PT{r.randint(1, 59)}M",
}
