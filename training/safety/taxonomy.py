"""Category labels for training text: the MLCommons hazard codes S1..S14 (Llama Guard 3's taxonomy).

Public data sets label harm in their own words ("violence", "privacy", "Financial and Business"),
and the project's own data in Llama Guard 1's O1..O6; both are brought to S-codes here, in one
place. Where a source says only "harmful", the category comes from keyword rules over the text:
noisy, which is why the classifier's decision rests on its separate "unsafe" output and the
category only says which rule was broken (services/safety/head.py).
"""

from __future__ import annotations

import re

S_CODES: tuple[str, ...] = tuple(f"S{i}" for i in range(1, 15))

# Ordered: the first rules are the more specific ones (S4 before S12, S9 before S1). Every rule
# that matches contributes a label; a harmful text that matches none is a non-violent crime (S2),
# the broadest category.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (code, re.compile(pattern, re.IGNORECASE))
    for code, pattern in (
        (
            "S4",
            r"\b(child|children|minors?|underage|kids?|preteen|[0-9]{1,2}[- ]year[- ]old)\b.{0,60}"
            r"\b(sex|nude|naked|porn|explicit|erotic|groom)|\b(sex|nude|naked|porn|erotic|groom)\w*\b"
            r".{0,60}\b(child|children|minors?|underage|kids?)\b",
        ),
        (
            "S3",
            r"\brap(e|ing|ist)\b|sexual(ly)? (assault|abus|harass)|traffick|\bgrop|molest|non-?consensual",
        ),
        (
            "S11",
            r"suicid|kill (myself|yourself|themselves)|self[- ]?harm|cut(ting)? (myself|yourself)|"
            r"end (my|your) (own )?life|starv(e|ing) (myself|yourself)|anorexi|bulimi|\bpurg(e|ing)\b",
        ),
        (
            "S9",
            r"\bbombs?\b|explosive|detonat|nerve (agent|gas)|sarin|anthrax|bio ?weapon|biological weapon|"
            r"chemical weapon|nuclear|radiolog|ricin|mustard gas|\bvx\b|pathogen|weapons? of mass|"
            r"dimethylmercury|botulinum|plague|smallpox|uranium|plutonium",
        ),
        (
            "S10",
            r"racis|nazi|white (suprem|power)|\bslurs?\b|inferior race|subhuman|hate speech|"
            r"(jews|muslims|black people|immigrants|gay people|trans people|women|christians|hindus|"
            r"asians|mexicans|arabs|disabled people) (are|should)|ethnic cleansing|holocaust (denial|never)",
        ),
        (
            "S14",
            r"code interpreter|sandbox escape|container escape|privilege escalation|fork bomb|rm -rf /|"
            r"denial[- ]of[- ]service|\bddos\b|reverse shell",
        ),
        (
            "S7",
            r"home address|phone number|social security|\bssn\b|\bdox|personal (data|information|details)|"
            r"private (messages|information|data)|track (someone|my|her|his|their) (location|phone)|"
            r"\bstalk|spy on|where (she|he) lives|medical records of",
        ),
        (
            "S8",
            r"copyright|pirat(e|ed|ing)|torrent|crack(ed)? (software|licen)|lyrics of|full text of|plagiari",
        ),
        ("S13", r"election|\bvot(e|es|ing|ers?)\b|ballot|polling (station|place)"),
        ("S5", r"defam|libel|slander|smear|false (rumou?rs?|claims?|stor)|fake news|(mis|dis)information"),
        ("S12", r"\bporn|erotic|explicit sex|sex scene|\bnude|\bnaked|orgasm|sexual(ly)? explicit|sext"),
        (
            "S1",
            r"\bkill|murder|assault|\bstab|\bshoot|tortur|kidnap|terror|poison|\bhurt\b|beat (up|someone)|"
            r"massacre|genocide|\babuse|mass shooting|strangl|behead|arson",
        ),
        (
            "S2",
            r"\bhack|malware|ransomware|\bvirus|phish|fraud|\bscam|\bsteal|theft|launder|counterfeit|"
            r"\bdrugs?\b|\bmeth\b|cocaine|heroin|fentanyl|smuggl|tax evasion|shoplift|burglar|break into|"
            r"\bforg(e|ed|ing)\b|brib|blackmail|extort|identity theft|credit card|keylogger|spyware|"
            r"\bguns?\b|firearm|rifle|ammunition|silencer",
        ),
    )
)


def keyword_categories(text: str) -> list[str]:
    """S-codes of a text known to be harmful, from keyword rules; never empty."""
    found = [code for code, rule in _RULES if rule.search(text)]
    return found or ["S2"]


# Llama Guard 1's O-codes (the project's hand-written data) -> S-codes. O1 and O4 split by text:
# "violence and hate" is S1 or S10, "guns and illegal weapons" S2 (weapons crimes) or S9.
_O_DIRECT = {"O2": ("S12",), "O3": ("S2",), "O5": ("S2",), "O6": ("S11",)}
_O_SPLIT = {"O1": ("S1", {"S10", "S1", "S3", "S4"}), "O4": ("S2", {"S9", "S1", "S2"})}


def from_o_codes(labels: list[str], text: str) -> list[str]:
    """S-codes for a text labelled with O-codes: direct where one S-code covers the O-code, else the
    keyword rules restricted to the S-codes the O-code can mean."""
    out: list[str] = []
    for label in labels:
        if label in _O_DIRECT:
            codes = list(_O_DIRECT[label])
            if label == "O2":
                # Sexual content involving minors or force is a crime category, not just S12.
                codes += [c for c in keyword_categories(text) if c in {"S3", "S4"}]
        else:
            fallback, allowed = _O_SPLIT[label]
            codes = [c for c in keyword_categories(text) if c in allowed] or [fallback]
        out.extend(c for c in codes if c not in out)
    return out


# Harm names used by public data sets -> S-codes.
HARM_NAMES: dict[str, tuple[str, ...]] = {
    "violence": ("S1",),
    "harassment": ("S1",),
    "harassment_bullying": ("S1",),
    "hate": ("S10",),
    "hate_speech": ("S10",),
    "representational": ("S10",),
    "bias": ("S10",),
    "self_harm": ("S11",),
    "sexual": ("S12",),
    "privacy": ("S7",),
    "leakage": ("S7",),
    "exploits": ("S2",),
    "cyber": ("S2",),
    "malware": ("S2",),
    "illegal": ("S2",),
    "illegal_activity": ("S2",),
    "scams": ("S2",),
    "phishing": ("S2",),
    "chemical_biological": ("S9",),
    "info_integrity": ("S5",),
    "misinformation": ("S5",),
}
