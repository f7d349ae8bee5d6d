"""CISAC society codes that the ledger names (CWR "PR/MR/SR Affiliation Society #", HDR sender
id of a society), from the CISAC society code list: the Korean societies and the large ones
that appear in Korean repertoire. A code not listed is kept as `CISAC-<code>`.

The ledger's orgs that are CISAC societies send and receive CWR under their code; KOSCAP has
none in the list, so its acknowledgements carry 000 unless `kledger import --society-code` says
otherwise.
"""

from __future__ import annotations

SOCIETIES = {
    "000": "DP",  # public domain
    "008": "APRA",
    "010": "ASCAP",
    "021": "BMI",
    "023": "BUMA",
    "026": "CASH",
    "035": "GEMA",
    "038": "JASRAC",
    "044": "MCPS",
    "052": "PRS",
    "058": "SACEM",
    "071": "SESAC",
    "072": "SGAE",
    "074": "SIAE",
    "079": "STIM",
    "101": "SOCAN",
    "118": "KOMCA",
    "161": "MUST",
    "178": "KOSA",
    "183": "SACK",
}
CODE_OF = {name: code for code, name in SOCIETIES.items()}


def society_name(code: str) -> str:
    """The society's short name for a 3-digit code (blank -> "")."""
    code = code.strip()
    if not code:
        return ""
    if code.isascii() and code.isdigit():
        code = f"{int(code):03d}"
    return SOCIETIES.get(code, f"CISAC-{code}")


def society_code(org: str) -> str:
    return CODE_OF.get(org, "000")
